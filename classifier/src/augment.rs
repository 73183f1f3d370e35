//! Reference augmentation: extra training examples from the ISCO-08 reference.
//!
//! For each unit group, from its title, definition, task list and "examples of the
//! occupations classified here":
//! - each example occupation title, alone and paired with one or two of the group's task
//!   sentences (as `title | duties`, like a record);
//! - the group title (and a naive singular of it) as a title;
//! - each task sentence and the lead definition sentence as duties.
//!
//! Related occupations "classified elsewhere" are skipped: they belong to other groups.

use crate::rng::Rng;
use crate::taxonomy::Taxonomy;
use crate::text::{normalize, record_text};

/// A plural ISCO title made singular ("Software developers" -> "software developer").
pub fn singular(title: &str) -> String {
    let mut words: Vec<String> = title.split_whitespace().map(str::to_string).collect();
    // "Software developers" -> "Software developer"; leave "(general)" and the like alone.
    if let Some(w) = words
        .iter_mut()
        .rev()
        .find(|w| w.chars().all(char::is_alphabetic))
    {
        if w.ends_with("ies") {
            w.truncate(w.len() - 3);
            w.push('y');
        } else if w.ends_with('s') && !w.ends_with("ss") {
            w.pop();
        }
    }
    words.join(" ")
}

/// Splits a definition into (lead sentence, task sentences, example titles).
pub fn parse_definition(def: &str) -> (String, Vec<String>, Vec<String>) {
    let mut lead = String::new();
    let mut tasks = Vec::new();
    let mut examples = Vec::new();
    #[derive(PartialEq)]
    enum Part {
        Lead,
        Tasks,
        Examples,
        Skip,
    }
    let mut part = Part::Lead;
    for line in def.lines() {
        let l = line.trim();
        let low = l.to_lowercase();
        if low.starts_with("tasks include") {
            part = Part::Tasks;
            continue;
        }
        if low.starts_with("examples of the occupations classified here") {
            part = Part::Examples;
            // Inline lists: "Examples of …: A; B; C."
            if let Some((_, rest)) = l.split_once(':') {
                for e in rest.split(';') {
                    let e = e.trim().trim_end_matches('.');
                    if !e.is_empty() {
                        examples.push(e.to_string());
                    }
                }
            }
            continue;
        }
        if low.starts_with("some related occupations")
            || low.starts_with("notes")
            || low.starts_with("note ")
            || low.starts_with("occupations in this")
        {
            part = Part::Skip;
            continue;
        }
        if l.is_empty() {
            continue;
        }
        match part {
            Part::Lead => {
                if lead.is_empty() {
                    // The first sentence, and for the demo layout the inline task list.
                    let (first, rest) = match l.find(". ") {
                        Some(i) => (&l[..i], &l[i + 2..]),
                        None => (l, ""),
                    };
                    lead = first.to_string();
                    let rest_low = rest.to_lowercase();
                    if let Some(pos) = rest_low.find("examples of the occupations classified here")
                    {
                        let ex = &rest[pos..];
                        if let Some((_, list)) = ex.split_once(':') {
                            for e in list.split(';') {
                                let e = e.trim().trim_end_matches('.');
                                if !e.is_empty() {
                                    examples.push(e.to_string());
                                }
                            }
                        }
                    }
                    if let Some((_, t)) = first.split_once("such as ") {
                        tasks.extend(t.split(';').map(|s| s.trim().to_string()));
                    }
                }
            }
            Part::Tasks => {
                // "(a)  researching, analysing …;"
                let t = l.trim_start_matches(|c: char| {
                    c == '(' || c.is_ascii_lowercase() && l.starts_with('(')
                });
                let t = match l.find(')') {
                    Some(i) if l.starts_with('(') && i < 6 => &l[i + 1..],
                    _ => t,
                };
                let t = t
                    .trim()
                    .trim_end_matches([';', '.'])
                    .trim_end_matches(" and");
                if !t.is_empty() {
                    tasks.push(t.to_string());
                }
            }
            Part::Examples => {
                let e = l.trim_start_matches('-').trim();
                if !e.is_empty() {
                    examples.push(e.to_string());
                }
            }
            Part::Skip => {}
        }
    }
    (lead, tasks, examples)
}

/// Augmentation examples as (normalised text, 4-digit code).
pub fn reference_examples(tax: &Taxonomy, seed: u64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for g in tax.units() {
        let mut rng = Rng::keyed(seed, &g.code);
        let (lead, tasks, examples) = parse_definition(&g.definition);
        let mut titles: Vec<String> = examples.clone();
        if !g.title.is_empty() {
            titles.push(g.title.clone());
            titles.push(singular(&g.title));
        }
        for t in &titles {
            out.push((record_text(t, ""), g.code.clone()));
            if !tasks.is_empty() {
                for _ in 0..2 {
                    let a = &tasks[rng.below(tasks.len())];
                    let b = &tasks[rng.below(tasks.len())];
                    let duties = if a == b {
                        a.clone()
                    } else {
                        format!("{a}; {b}")
                    };
                    out.push((record_text(t, &duties), g.code.clone()));
                }
            }
        }
        for t in tasks.iter().chain(std::iter::once(&lead)) {
            let d = normalize(t);
            if !d.is_empty() {
                out.push((format!("| {d}"), g.code.clone()));
            }
        }
    }
    out.retain(|(t, _)| !t.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taxonomy::Group;

    #[test]
    fn parses_ilo_definitions() {
        let def = "Software developers research and design software.\nTasks include -\n(a)  researching requirements for software;\n(b)  designing software systems.\nExamples of the occupations classified here:\n- Programmer analyst\n- Software engineer\nSome related occupations classified elsewhere:\n- Applications programmers - 2514";
        let (lead, tasks, ex) = parse_definition(def);
        assert_eq!(lead, "Software developers research and design software.");
        assert_eq!(
            tasks,
            vec![
                "researching requirements for software",
                "designing software systems"
            ]
        );
        assert_eq!(ex, vec!["Programmer analyst", "Software engineer"]);
        let tax = Taxonomy::from_groups([Group {
            code: "2512".into(),
            title: "Software developers".into(),
            definition: def.into(),
        }]);
        let aug = reference_examples(&tax, 1);
        assert!(aug.iter().any(|(t, _)| t == "software developer"));
        assert!(
            aug.iter()
                .any(|(t, _)| t.starts_with("programmer analyst | "))
        );
        assert!(
            !aug.iter()
                .any(|(t, _)| t.contains("applications programmers"))
        );
        assert!(aug.iter().all(|(_, c)| c == "2512"));
    }
}
