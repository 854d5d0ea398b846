//! Progressive selection, DARTS-PT style (ruocwang/darts-pt `projection.py`, spaces.md §5,
//! paper.md §8): starting from the searched supernet, decide one random edge at a time and fix
//! it to the one-hot of the chosen op, fine-tuning θ and the remaining α for `pt_interval`
//! epochs between decisions; in the DARTS spaces, after every edge of both cells is decided,
//! decide each node's two inputs the same way (the topology decisions).
//!
//! Decision rules (`select.pt_rule`):
//! - `accuracy` (DARTS-PT): mask each op of the edge in turn (its weight set to zero, no
//!   renormalisation) and measure the accuracy on the whole validation split with batch
//!   statistics; keep the op whose removal lowers it most. Topology: remove, one at a time, the
//!   incoming edge whose removal leaves the highest accuracy until two remain.
//! - `loss`: the same with the validation loss (keep the op whose removal raises it most).
//! - `darts-if` / `darts-im`: the op with the best influence score on the current (projected)
//!   supernet; topology: the two incoming edges with the best scores.
//!
//! The schedule: decision k at tuning epoch k·pt_interval, `pt_interval·(decisions − 1) + 1`
//! tuning epochs (DARTS space: 14 + 3 decisions, 81 epochs, as the reference; NB201: 6
//! decisions, 26 epochs where the reference runs 25 with its last decision at epoch 24). The θ
//! optimiser restarts at `pt_lr` (search lr / 10), constant (NB201 version) or cosine to the
//! search's lr_min (DARTS version); both optimisers restart from zero state (the reference
//! reloads them from the search checkpoint). `none` is never chosen, as in every rule here.

use serde_json::{json, Value};
use tch::{Kind, Tensor};

use crate::comm::{broadcast_value, Collective};
use crate::config::{Config, Criterion, PtRule};
use crate::error::Result;
use crate::influence::{Context, Timings};
use crate::search::{Observer, SearchState, Searcher};
use crate::space::{Family, SpaceSpec};

use crate::space::ScoreTable;

/// One decision: an edge's op (a 1Shot1 choice block's), (DARTS) a node's two inputs, or
/// (1Shot1) the parents of a node or of the output, the single row of an input table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Op { table: usize, row: usize },
    Inputs { table: usize, node: usize },
    Parents { table: usize, keep: usize },
}

/// The decisions in order, grouped by event (DARTS decides the normal and the reduction cell
/// at the same event): a random order of the edges, then (DARTS) of the nodes with 3–5 inputs,
/// drawn from the seed.
pub fn schedule(spec: &SpaceSpec, seed: u64) -> Result<Vec<Vec<Decision>>> {
    let mut rng = crate::rng::SplitMix64::keyed(&[seed, 0x5054]); // "PT"
    let mut perm = |n: usize| -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            v.swap(i, rng.below(i as u64 + 1) as usize);
        }
        v
    };
    match spec.family {
        Family::Nb201 => {
            Ok(perm(spec.cells[0].edges.len()).into_iter().map(|row| vec![Decision::Op { table: 0, row }]).collect())
        }
        Family::Darts => {
            let tables = spec.cells.len();
            let rows: Vec<Vec<usize>> = (0..tables).map(|_| perm(14)).collect();
            let nodes: Vec<Vec<usize>> = (0..tables).map(|_| perm(3).into_iter().map(|n| n + 1).collect()).collect();
            let mut events: Vec<Vec<Decision>> =
                (0..14).map(|k| (0..tables).map(|t| Decision::Op { table: t, row: rows[t][k] }).collect()).collect();
            events.extend(
                (0..3).map(|k| (0..tables).map(|t| Decision::Inputs { table: t, node: nodes[t][k] }).collect()),
            );
            Ok(events)
        }
        // 1Shot1: the choice blocks' ops in a random order, then the parent rows (the output's
        // and each searched block's) in a random order, one decision per event.
        Family::Nb1Shot1(n) => {
            let layout = crate::space::Nb1Shot1Layout::space(n);
            let mut events: Vec<Vec<Decision>> =
                perm(layout.steps).into_iter().map(|row| vec![Decision::Op { table: 0, row }]).collect();
            let keep = |table: usize| {
                if table == 1 {
                    layout.output_parents
                } else {
                    layout.parents[layout.fixed_blocks + table - 2]
                }
            };
            let tables = spec.cells.len() - 1;
            events
                .extend(perm(tables).into_iter().map(|i| vec![Decision::Parents { table: i + 1, keep: keep(i + 1) }]));
            Ok(events)
        }
    }
}

/// The tuning config: the search's, with `pt_interval·(events − 1) + 1` epochs at `pt_lr`.
pub fn tune_config(cfg: &Config, spec: &SpaceSpec) -> Result<Config> {
    let events = schedule(spec, cfg.seed)?.len();
    let mut t = cfg.clone();
    let s = &cfg.select;
    t.search.epochs = s.pt_interval * (events - 1) + 1;
    t.search.arch_start_epoch = 0;
    t.search.strategy = crate::config::Strategy::Darts1st; // DARTS-PT tunes with first-order α steps (§5.2)
    let lr = if s.pt_lr > 0.0 { s.pt_lr } else { cfg.search.weights.lr / 10.0 };
    let cosine = match s.pt_schedule {
        crate::config::PtSchedule::Auto => spec.family != Family::Nb201,
        crate::config::PtSchedule::Constant => false,
        crate::config::PtSchedule::Cosine => true,
    };
    t.search.weights.lr = lr;
    t.search.weights.lr_min = if cosine { cfg.search.weights.lr_min.min(lr) } else { lr };
    Ok(t)
}

/// A copy of the forward weights with `f` applied to table `table`'s values.
fn modified(w: &[Tensor], table: usize, f: impl Fn(&mut Tensor)) -> Vec<Tensor> {
    w.iter()
        .enumerate()
        .map(|(i, t)| {
            let mut c = t.detach().copy();
            if i == table {
                f(&mut c);
            }
            c
        })
        .collect()
}

/// Run the progressive selection on `state` (the searched supernet, or a checkpoint of this
/// selection) with `searcher` configured by [`tune_config`]. Every decision is logged through
/// `log` (on all ranks; the caller writes on the coordinator). Returns the projected weights as
/// the score table.
pub fn run(
    searcher: &Searcher,
    state: &mut SearchState,
    obs: &mut dyn Observer,
    log: &mut dyn FnMut(Value) -> Result<()>,
) -> Result<ScoreTable> {
    let cfg = searcher.cfg;
    let events = schedule(state.net.spec(), cfg.seed)?;
    let interval = cfg.select.pt_interval;
    // Tuning epochs with their decisions (the epoch's steps report through the search's log).
    let mut progress = crate::progress::Progress::new(
        format!("darts-pt: {} decisions, tuning epochs", events.iter().map(Vec::len).sum::<usize>()),
        "epochs",
        cfg.search.epochs as u64,
        searcher.comm.is_coordinator(),
        false,
    )
    .resumed(state.epoch as u64);
    while state.epoch < cfg.search.epochs {
        let epoch = state.epoch;
        // A mid-epoch checkpoint comes after its epoch's decision.
        if state.progress.is_none() && epoch % interval == 0 && epoch / interval < events.len() {
            let k = epoch / interval;
            for d in &events[k] {
                let mut entry = decide(searcher, state, *d)?;
                entry["event"] = json!(k);
                entry["epoch"] = json!(epoch);
                tracing::info!("darts-pt decision {k}: {entry}");
                log(entry)?;
            }
        }
        searcher.run_epoch(state, obs)?;
        progress.inc(1);
    }
    let w = state.weights(&state.alphas.iter().map(|a| a.detach().to_kind(Kind::Double)).collect::<Vec<_>>());
    let n = state.net.spec().cells.len();
    Ok(ScoreTable::plain("darts-pt", w[..n].iter().map(crate::supernet::table_of).collect()))
}

/// The current forward weights, detached.
fn current(state: &SearchState) -> Vec<Tensor> {
    state.weights(&state.alphas.iter().map(|a| a.detach()).collect::<Vec<_>>())
}

/// Validation loss and accuracy of `w` on the whole α split.
fn validate(searcher: &Searcher, state: &SearchState, w: &[Tensor]) -> Result<(f64, f64)> {
    let t = searcher.evaluate_with(state.net.as_ref(), w, None, &searcher.split.arch)?;
    Ok((t.loss(), t.acc()))
}

/// The influence scores of the configured rule on the current projected supernet.
fn influence(searcher: &Searcher, state: &SearchState, criterion: Criterion) -> Result<Vec<Vec<Vec<f64>>>> {
    let mut cfg = searcher.cfg.clone();
    cfg.select.criterion = criterion;
    let timings = Timings::default();
    let ctx = Context {
        cfg: &cfg,
        net: state.net.as_ref(),
        alphas: &state.alphas,
        comm: searcher.comm,
        data: searcher.data,
        val: &searcher.split.arch,
        train: &searcher.split.weights,
        timings: &timings,
        projection: Some(&state.projection),
    };
    Ok(ctx.run()?.table.scores)
}

/// Rank 0's choice, shared (every rank computes the same values; this makes it certain).
fn agree<T: serde::Serialize + serde::de::DeserializeOwned>(comm: &dyn Collective, mine: T) -> Result<T> {
    broadcast_value(comm, 0, comm.is_coordinator().then_some(&mine))
}

fn decide(searcher: &Searcher, state: &mut SearchState, d: Decision) -> Result<Value> {
    let spec = state.net.spec().clone();
    let rule = searcher.cfg.select.pt_rule;
    match d {
        Decision::Parents { table, keep } => decide_parents(searcher, state, table, keep),
        Decision::Op { table, row } => {
            let t = &spec.cells[table];
            let none = t.none_index();
            let ops: Vec<usize> = (0..t.ops.len()).filter(|&o| Some(o) != none).collect();
            let (chosen, candidates) = if let Some(criterion) = rule.criterion() {
                let scores = influence(searcher, state, criterion)?;
                let s = &scores[table][row];
                let best = ops.iter().copied().fold(None::<usize>, |b, o| match b {
                    Some(x) if s[x] >= s[o] => b,
                    _ => Some(o),
                });
                (best.expect("an op"), ops.iter().map(|&o| json!({"op": t.ops[o], "score": s[o]})).collect())
            } else {
                let w = current(state);
                let mut trials = Vec::new();
                for &o in &ops {
                    let masked = modified(&w, table, |c| {
                        let _ = c.get(row as i64).get(o as i64).fill_(0.0);
                    });
                    trials.push((o, validate(searcher, state, &masked)?));
                }
                // accuracy: the op whose removal hurts accuracy most (lowest); loss: highest loss.
                let key = |(l, a): (f64, f64)| if rule == PtRule::Accuracy { -a } else { l };
                let best = trials.iter().fold(None::<(usize, f64)>, |b, &(o, r)| match b {
                    Some((_, v)) if v >= key(r) => b,
                    _ => Some((o, key(r))),
                });
                let cands: Vec<Value> = trials
                    .iter()
                    .map(|&(o, (l, a))| json!({"op": t.ops[o], "masked_loss": l, "masked_acc": a}))
                    .collect();
                (best.expect("an op").0, cands)
            };
            let chosen = agree(searcher.comm, chosen)?;
            let mut one_hot = vec![0.0; t.ops.len()];
            one_hot[chosen] = 1.0;
            state.projection.set(table, row, one_hot);
            Ok(json!({
                "kind": "op", "rule": rule, "cell": t.name, "edge": t.edges[row],
                "candidates": candidates, "chosen": t.ops[chosen],
            }))
        }
        Decision::Inputs { table, node } => {
            let t = &spec.cells[table];
            let start = node * (node + 3) / 2;
            let mut remaining: Vec<usize> = (start..start + node + 2).collect();
            let mut rounds = Vec::new();
            let mut removed = Vec::new();
            match rule.criterion() {
                None => {
                    while remaining.len() > 2 {
                        let w = current(state);
                        let mut trials = Vec::new();
                        for &e in &remaining {
                            let cut = modified(&w, table, |c| {
                                let _ = c.get(e as i64).fill_(0.0);
                            });
                            trials.push((e, validate(searcher, state, &cut)?));
                        }
                        // Remove the edge whose removal leaves the best accuracy (lowest loss).
                        let key = |(l, a): (f64, f64)| if rule == PtRule::Accuracy { a } else { -l };
                        let worst = trials.iter().fold(None::<(usize, f64)>, |b, &(e, r)| match b {
                            Some((_, v)) if v >= key(r) => b,
                            _ => Some((e, key(r))),
                        });
                        let e = agree(searcher.comm, worst.expect("an edge").0)?;
                        rounds.push(
                            trials
                                .iter()
                                .map(|&(e, (l, a))| json!({"edge": t.edges[e], "cut_loss": l, "cut_acc": a}))
                                .collect::<Vec<_>>(),
                        );
                        state.projection.set(table, e, vec![0.0; t.ops.len()]);
                        remaining.retain(|&x| x != e);
                        removed.push(t.edges[e].clone());
                    }
                }
                Some(criterion) => {
                    let scores = influence(searcher, state, criterion)?;
                    let none = t.none_index();
                    let chosen = |e: usize| -> Option<usize> {
                        state
                            .projection
                            .fixed
                            .iter()
                            .find(|f| (f.0, f.1) == (table, e))
                            .and_then(|f| f.2.iter().position(|&v| v == 1.0))
                    };
                    // An edge's strength is the score of its decided op (every edge is decided by the
                    // time of the topology events); an undecided one counts its best non-none op.
                    let strength = |e: usize| -> f64 {
                        match chosen(e) {
                            Some(o) => scores[table][e][o],
                            None => scores[table][e]
                                .iter()
                                .enumerate()
                                .filter(|(o, _)| Some(*o) != none)
                                .map(|(_, v)| *v)
                                .fold(f64::NEG_INFINITY, f64::max),
                        }
                    };
                    let mut order = remaining.clone();
                    order.sort_by(|&a, &b| strength(b).total_cmp(&strength(a))); // stable: earlier edge on ties
                    rounds.push(order.iter().map(|&e| json!({"edge": t.edges[e], "strength": strength(e)})).collect());
                    let keep: Vec<usize> = agree(searcher.comm, order[..2].to_vec())?;
                    for &e in &remaining {
                        if !keep.contains(&e) {
                            state.projection.set(table, e, vec![0.0; t.ops.len()]);
                            removed.push(t.edges[e].clone());
                        }
                    }
                    remaining = keep;
                }
            }
            Ok(json!({
                "kind": "inputs", "rule": rule, "cell": t.name, "node": node + 2, "rounds": rounds,
                "removed": removed, "kept": remaining.iter().map(|&e| t.edges[e].clone()).collect::<Vec<_>>(),
            }))
        }
    }
}

/// A 1Shot1 parent row: with the accuracy (or loss) rule, remove one parent at a time — the one
/// whose removal leaves the best accuracy — until `keep` remain; with an influence rule, keep
/// the `keep` best-scored. The row is then fixed to 1 for the kept parents and 0 elsewhere (the
/// discrete cell sums its parents unweighted).
fn decide_parents(searcher: &Searcher, state: &mut SearchState, table: usize, keep: usize) -> Result<Value> {
    let spec = state.net.spec().clone();
    let t = &spec.cells[table];
    let rule = searcher.cfg.select.pt_rule;
    let mut remaining: Vec<usize> = (0..t.ops.len()).collect();
    let mut rounds = Vec::new();
    match rule.criterion() {
        None => {
            let mut removed: Vec<usize> = Vec::new();
            while remaining.len() > keep {
                let w = current(state);
                let mut trials = Vec::new();
                for &p in &remaining {
                    let cut = modified(&w, table, |c| {
                        for &q in removed.iter().chain([&p]) {
                            let _ = c.get(0).get(q as i64).fill_(0.0);
                        }
                    });
                    trials.push((p, validate(searcher, state, &cut)?));
                }
                let key = |(l, a): (f64, f64)| if rule == PtRule::Accuracy { a } else { -l };
                let worst = trials.iter().fold(None::<(usize, f64)>, |b, &(p, r)| match b {
                    Some((_, v)) if v >= key(r) => b,
                    _ => Some((p, key(r))),
                });
                let p = agree(searcher.comm, worst.expect("a parent").0)?;
                rounds.push(
                    trials
                        .iter()
                        .map(|&(p, (l, a))| json!({"parent": t.ops[p], "cut_loss": l, "cut_acc": a}))
                        .collect::<Vec<_>>(),
                );
                removed.push(p);
                remaining.retain(|&x| x != p);
            }
        }
        Some(criterion) => {
            let scores = influence(searcher, state, criterion)?;
            let s = &scores[table][0];
            let mut order = remaining.clone();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a])); // stable: the earlier parent on ties
            rounds.push(order.iter().map(|&p| json!({"parent": t.ops[p], "score": s[p]})).collect());
            remaining = agree(searcher.comm, order[..keep].to_vec())?;
            remaining.sort_unstable();
        }
    }
    let row: Vec<f64> = (0..t.ops.len()).map(|p| if remaining.contains(&p) { 1.0 } else { 0.0 }).collect();
    state.projection.set(table, 0, row);
    Ok(json!({
        "kind": "parents", "rule": rule, "cell": t.name, "rounds": rounds,
        "kept": remaining.iter().map(|&p| t.ops[p].clone()).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_cover_every_edge_once() {
        let nb = schedule(&SpaceSpec::nb201(), 3).unwrap();
        let mut rows: Vec<usize> = nb
            .iter()
            .map(|e| match e[..] {
                [Decision::Op { table: 0, row }] => row,
                _ => panic!("{e:?}"),
            })
            .collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..6).collect::<Vec<_>>());
        // DARTS: 14 op events (normal + reduce), then 3 topology events over nodes 1–3.
        let d = schedule(&SpaceSpec::darts_s5(), 3).unwrap();
        assert_eq!(d.len(), 17);
        for t in 0..2 {
            let mut r: Vec<usize> = d[..14]
                .iter()
                .map(|e| match e[t] {
                    Decision::Op { row, .. } => row,
                    _ => 99,
                })
                .collect();
            r.sort_unstable();
            assert_eq!(r, (0..14).collect::<Vec<_>>());
            let mut n: Vec<usize> = d[14..]
                .iter()
                .map(|e| match e[t] {
                    Decision::Inputs { node, .. } => node,
                    _ => 99,
                })
                .collect();
            n.sort_unstable();
            assert_eq!(n, vec![1, 2, 3]);
        }
        // 1Shot1 space 1: 4 choice blocks, then the output's and blocks 3–4's parent rows.
        let nb = schedule(&SpaceSpec::nb1shot1(1), 3).unwrap();
        assert_eq!(nb.len(), 4 + 3);
        let mut ops: Vec<usize> = nb[..4]
            .iter()
            .map(|e| match e[0] {
                Decision::Op { row, .. } => row,
                _ => 99,
            })
            .collect();
        ops.sort_unstable();
        assert_eq!(ops, [0, 1, 2, 3]);
        let mut parents: Vec<(usize, usize)> = nb[4..]
            .iter()
            .map(|e| match e[0] {
                Decision::Parents { table, keep } => (table, keep),
                _ => (99, 0),
            })
            .collect();
        parents.sort_unstable();
        // Space 1: the output keeps 2 parents, blocks 3 and 4 (tables 2, 3) keep 2 each.
        assert_eq!(parents, [(1, 2), (2, 2), (3, 2)]);
    }
}
