use crate::console;

pub fn exec() -> anyhow::Result<()> {
    let registry = stages::registry();
    let kinds: Vec<_> = registry.all().collect();
    // One column width for every kind's input and output names, so the list reads as a table.
    let width = kinds
        .iter()
        .flat_map(|k| {
            k.inputs()
                .iter()
                .map(|i| i.name.len())
                .chain(k.outputs().iter().map(|o| o.name.len()))
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0);
    for k in kinds {
        console::out(&format!("{} (v{}): {}", k.kind(), k.version(), k.help()));
        for i in k.inputs() {
            console::out(&format!(
                "  input  {:<width$} {}{}",
                i.name,
                i.help,
                if i.required { "" } else { " (optional)" }
            ));
        }
        for o in k.outputs() {
            console::out(&format!("  output {:<width$} {}", o.name, o.file));
        }
        console::out(&format!("  params {}", k.param_names().join(", ")));
    }
    Ok(())
}
