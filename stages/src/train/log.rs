//! The per-step loss log: kept in memory, saved with every checkpoint (so that a resumed
//! or extended run's log is whole), and written as CSV and SVG plots at the end.

use std::fmt::Write as _;

use crate::StageError;

#[derive(Debug, Clone, PartialEq)]
pub struct LossLog {
    pub columns: Vec<String>,
    /// (step, epoch, values in `columns` order); step and epoch are 1-based.
    pub rows: Vec<(usize, usize, Vec<f64>)>,
}

impl LossLog {
    pub fn new(columns: &[&str]) -> LossLog {
        LossLog {
            columns: columns.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, step: usize, epoch: usize, values: Vec<f64>) {
        debug_assert_eq!(values.len(), self.columns.len());
        self.rows.push((step, epoch, values));
    }

    /// Rows after `step` are dropped (a resumed run recomputes them).
    pub fn truncate_to(&mut self, step: usize) {
        self.rows.retain(|r| r.0 <= step);
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// `step,epoch,<columns>`; floats in Rust's shortest round-trip form, so that a log read
    /// back from a checkpoint is bit-identical.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("step,epoch");
        for c in &self.columns {
            s.push(',');
            s.push_str(c);
        }
        s.push('\n');
        for (step, epoch, vals) in &self.rows {
            let _ = write!(s, "{step},{epoch}");
            for v in vals {
                let _ = write!(s, ",{v:?}");
            }
            s.push('\n');
        }
        s
    }

    pub fn from_csv(text: &str) -> Result<LossLog, StageError> {
        let bad = |line: usize, why: &str| {
            StageError::Failed(format!("loss log in checkpoint, line {line}: {why}"))
        };
        let mut lines = text.lines();
        let header = lines.next().ok_or_else(|| bad(1, "empty"))?;
        let cols: Vec<&str> = header.split(',').collect();
        if cols.len() < 2 || cols[0] != "step" || cols[1] != "epoch" {
            return Err(bad(1, "header must start with step,epoch"));
        }
        let mut log = LossLog::new(&cols[2..]);
        for (i, line) in lines.enumerate() {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != cols.len() {
                return Err(bad(i + 2, "wrong number of fields"));
            }
            let step = f[0].parse().map_err(|_| bad(i + 2, "step"))?;
            let epoch = f[1].parse().map_err(|_| bad(i + 2, "epoch"))?;
            let vals = f[2..]
                .iter()
                .map(|v| v.parse::<f64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad(i + 2, "value"))?;
            log.push(step, epoch, vals);
        }
        Ok(log)
    }

    /// Mean of each column per epoch: (epoch, means).
    pub fn epoch_means(&self) -> Vec<(usize, Vec<f64>)> {
        let mut out: Vec<(usize, Vec<f64>, usize)> = Vec::new();
        for (_, epoch, vals) in &self.rows {
            match out.last_mut() {
                Some((e, sums, n)) if e == epoch => {
                    for (s, v) in sums.iter_mut().zip(vals) {
                        *s += v;
                    }
                    *n += 1;
                }
                _ => out.push((*epoch, vals.clone(), 1)),
            }
        }
        out.into_iter()
            .map(|(e, sums, n)| (e, sums.into_iter().map(|s| s / n as f64).collect()))
            .collect()
    }

    /// The last row's values by column name.
    pub fn last(&self) -> Option<Vec<(String, f64)>> {
        self.rows.last().map(|(_, _, v)| {
            self.columns
                .iter()
                .cloned()
                .zip(v.iter().copied())
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip_is_exact() {
        let mut l = LossLog::new(&["d_loss", "g_loss"]);
        l.push(1, 1, vec![0.1 + 0.2, -1e-30]);
        l.push(2, 1, vec![std::f64::consts::PI, 3.0]);
        l.push(3, 2, vec![1.0, 5.0]);
        let back = LossLog::from_csv(&l.to_csv()).unwrap();
        assert_eq!(back, l);
        let m = l.epoch_means();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1], (2, vec![1.0, 5.0]));
        let mut t = l.clone();
        t.truncate_to(1);
        assert_eq!(t.rows.len(), 1);
    }
}
