//! The stage graph: built and validated apart from running it (cycles are reported by stage
//! name), then handed to the scheduler as an immutable [`Dag`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};

use crate::error::{Error, Result};
use crate::spec::{InputRef, Pipeline};

/// The validated, acyclic stage graph. Edges point from upstream to downstream.
pub struct Dag {
    graph: DiGraph<String, ()>,
    index: BTreeMap<String, NodeIndex>,
    order: Vec<String>,
}

impl Dag {
    /// Builds the graph and rejects cycles.
    pub fn build(p: &Pipeline) -> Result<Dag> {
        let mut graph = DiGraph::new();
        let mut index = BTreeMap::new();
        for s in &p.stages {
            index.insert(s.id.clone(), graph.add_node(s.id.clone()));
        }
        for s in &p.stages {
            for up in s.upstream() {
                graph.add_edge(index[&up], index[&s.id], ());
            }
        }
        let order = match toposort(&graph, None) {
            Ok(nodes) => {
                // Stable order: among ready stages, prefer declaration order.
                let decl: BTreeMap<&str, usize> = p
                    .stages
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.id.as_str(), i))
                    .collect();
                stable_topo(&graph, &nodes, &decl)
            }
            Err(_) => {
                let cycle = tarjan_scc(&graph)
                    .into_iter()
                    .find(|c| c.len() > 1 || graph.contains_edge(c[0], c[0]))
                    .expect("toposort failed, so a cycle exists");
                return Err(Error::Cycle {
                    path: p.path.clone(),
                    cycle: describe_cycle(&graph, &cycle),
                });
            }
        };
        Ok(Dag {
            graph,
            index,
            order,
        })
    }

    /// Stage ids in a deterministic topological order.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// Direct upstream stages of `id`.
    pub fn upstream(&self, id: &str) -> Vec<String> {
        self.graph
            .neighbors_directed(self.index[id], petgraph::Direction::Incoming)
            .map(|n| self.graph[n].clone())
            .collect()
    }

    /// `id` and everything it depends on.
    pub fn ancestors(&self, id: &str) -> BTreeSet<String> {
        let rev = Reversed(&self.graph);
        let mut dfs = Dfs::new(rev, self.index[id]);
        let mut out = BTreeSet::new();
        while let Some(n) = dfs.next(rev) {
            out.insert(self.graph[n].clone());
        }
        out
    }

    /// `id` and everything that depends on it.
    pub fn descendants(&self, id: &str) -> BTreeSet<String> {
        let mut dfs = Dfs::new(&self.graph, self.index[id]);
        let mut out = BTreeSet::new();
        while let Some(n) = dfs.next(&self.graph) {
            out.insert(self.graph[n].clone());
        }
        out
    }

    /// Whether the stage exists.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }
}

fn stable_topo(
    g: &DiGraph<String, ()>,
    nodes: &[NodeIndex],
    decl: &BTreeMap<&str, usize>,
) -> Vec<String> {
    let mut indeg: BTreeMap<NodeIndex, usize> = nodes
        .iter()
        .map(|&n| {
            (
                n,
                g.neighbors_directed(n, petgraph::Direction::Incoming)
                    .count(),
            )
        })
        .collect();
    let mut ready: BTreeSet<(usize, NodeIndex)> = indeg
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(&n, _)| (decl[g[n].as_str()], n))
        .collect();
    let mut out = Vec::new();
    while let Some(first) = ready.iter().next().copied() {
        ready.remove(&first);
        let n = first.1;
        out.push(g[n].clone());
        for m in g.neighbors_directed(n, petgraph::Direction::Outgoing) {
            let d = indeg.get_mut(&m).expect("node");
            *d -= 1;
            if *d == 0 {
                ready.insert((decl[g[m].as_str()], m));
            }
        }
    }
    out
}

fn describe_cycle(g: &DiGraph<String, ()>, scc: &[NodeIndex]) -> Vec<String> {
    // Walk the component from its first node until we come back.
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let start = *scc
        .iter()
        .min_by_key(|n| g[**n].clone())
        .expect("non-empty");
    let mut path = vec![g[start].clone()];
    let mut cur = start;
    let mut seen = BTreeSet::from([start]);
    loop {
        let next = g
            .neighbors_directed(cur, petgraph::Direction::Outgoing)
            .filter(|n| members.contains(n))
            .min_by_key(|n| (seen.contains(n) && *n != start, g[*n].clone()))
            .expect("a cycle member has a successor in the cycle");
        path.push(g[next].clone());
        if next == start || seen.contains(&next) {
            break;
        }
        seen.insert(next);
        cur = next;
    }
    path
}

/// Text, Graphviz dot or Mermaid rendering of the pipeline graph.
pub fn render(p: &Pipeline, dag: &Dag, format: &str) -> String {
    let mut s = String::new();
    let edges = |f: &mut dyn FnMut(&str, &str, &str)| {
        for st in &p.stages {
            for (name, refs) in &st.inputs {
                for r in refs {
                    if let InputRef::Stage { stage, output } = r {
                        f(stage, &st.id, &format!("{output} -> {name}"));
                    }
                }
            }
            for a in &st.after {
                f(a, &st.id, "after");
            }
        }
    };
    match format {
        "dot" => {
            let _ = writeln!(s, "digraph \"{}\" {{\n  rankdir=LR;", p.name);
            for id in dag.order() {
                let st = p.stage(id).expect("stage");
                let _ = writeln!(s, "  \"{id}\" [shape=box, label=\"{id}\\n({})\"];", st.kind);
            }
            edges(&mut |a, b, l| {
                let _ = writeln!(s, "  \"{a}\" -> \"{b}\" [label=\"{l}\"];");
            });
            s.push_str("}\n");
        }
        "mermaid" => {
            s.push_str("flowchart LR\n");
            for id in dag.order() {
                let st = p.stage(id).expect("stage");
                let _ = writeln!(s, "  {}[\"{id} ({})\"]", mermaid_id(id), st.kind);
            }
            edges(&mut |a, b, l| {
                let _ = writeln!(s, "  {} -->|{l}| {}", mermaid_id(a), mermaid_id(b));
            });
        }
        _ => {
            let _ = writeln!(s, "pipeline {} ({} stages)", p.name, p.stages.len());
            for id in dag.order() {
                let st = p.stage(id).expect("stage");
                let ups = dag.upstream(id);
                let _ = write!(s, "  {id} [{}]", st.kind);
                if !ups.is_empty() {
                    let mut ups = ups;
                    ups.sort();
                    let _ = write!(s, " <- {}", ups.join(", "));
                }
                s.push('\n');
            }
        }
    }
    s
}

fn mermaid_id(id: &str) -> String {
    id.replace('-', "_")
}
