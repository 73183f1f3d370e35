use crate::console;

pub fn exec() -> anyhow::Result<()> {
    for k in stages::registry().all() {
        console::out(&format!("{} (v{}): {}", k.kind(), k.version(), k.help()));
        for i in k.inputs() {
            console::out(&format!(
                "  input  {:<12} {}{}",
                i.name,
                i.help,
                if i.required { "" } else { " (optional)" }
            ));
        }
        for o in k.outputs() {
            console::out(&format!("  output {:<12} {}", o.name, o.file));
        }
        console::out(&format!("  params {}", k.param_names().join(", ")));
    }
    Ok(())
}
