//! The console's charts: a few figures of the cluster sampled at a fixed
//! interval and kept for a bounded window, drawn as SVG polylines on the
//! server (no chart library in the page).

use std::collections::VecDeque;

use serde::Serialize;

use crate::status::StatusDocument;

/// Seconds between samples.
pub const SAMPLE_EVERY_S: u64 = 5;
/// Samples kept: ten minutes.
pub const SAMPLES: usize = 120;

/// One sample of the figures the charts show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Bytes rebuilt or moved per second (the repairer's 30 s window).
    pub repair_rate: u64,
    /// Fragments still to rebuild or move.
    pub repair_todo: u64,
    /// Chunks below full redundancy (degraded, at risk or lost).
    pub unhealthy_chunks: u64,
    /// Fragment bytes per second the nodes stored and served.
    pub write_rate: u64,
    pub read_rate: u64,
}

impl Sample {
    pub fn new(s: &StatusDocument) -> Self {
        Sample {
            repair_rate: s.repair.rate_bytes_per_s,
            repair_todo: s.repair.pending_fragments + s.repair.moving_fragments,
            unhealthy_chunks: s.chunks.degraded + s.chunks.at_risk + s.chunks.lost,
            write_rate: s.throughput.write_bytes_per_s,
            read_rate: s.throughput.read_bytes_per_s,
        }
    }
}

/// The last [`SAMPLES`] samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

/// A chart as the template draws it: the polyline's points in a 300 x 60
/// box, and the largest value (the top of the box).
#[derive(Debug, Serialize, PartialEq)]
pub struct Chart {
    pub points: String,
    pub max: u64,
    pub last: u64,
}

/// The charts of the console.
#[derive(Debug, Serialize, PartialEq)]
pub struct Charts {
    pub samples: usize,
    pub repair_rate: Chart,
    pub repair_todo: Chart,
    pub unhealthy_chunks: Chart,
    pub write_rate: Chart,
    pub read_rate: Chart,
}

impl History {
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn charts(&self) -> Charts {
        let chart = |f: fn(&Sample) -> u64| {
            let values: Vec<u64> = self.samples.iter().map(f).collect();
            polyline(&values, SAMPLES)
        };
        Charts {
            samples: self.samples.len(),
            repair_rate: chart(|s| s.repair_rate),
            repair_todo: chart(|s| s.repair_todo),
            unhealthy_chunks: chart(|s| s.unhealthy_chunks),
            write_rate: chart(|s| s.write_rate),
            read_rate: chart(|s| s.read_rate),
        }
    }
}

/// `values` (the newest last) as points in a 300 x 60 box whose right edge
/// is now and whose width holds `slots` samples; the top is the largest
/// value (or 1, so a flat zero line sits at the bottom).
pub fn polyline(values: &[u64], slots: usize) -> Chart {
    const W: f64 = 300.0;
    const H: f64 = 60.0;
    let max = values.iter().copied().max().unwrap_or(0);
    let top = max.max(1) as f64;
    let step = W / (slots.max(2) - 1) as f64;
    let first = slots.saturating_sub(values.len());
    let points = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let x = (first + i) as f64 * step;
            let y = H - (v as f64 / top) * H;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    Chart {
        points,
        max,
        last: values.last().copied().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_sample_is_at_the_right_edge_and_the_largest_at_the_top() {
        let c = polyline(&[0, 5, 10], 3);
        assert_eq!(c.points, "0.0,60.0 150.0,30.0 300.0,0.0");
        assert_eq!((c.max, c.last), (10, 10));
        // Fewer samples than slots: they end at the right edge.
        assert_eq!(polyline(&[2, 2], 3).points, "150.0,0.0 300.0,0.0");
        // All zero: a line along the bottom, not a division by zero.
        assert_eq!(polyline(&[0, 0], 2).points, "0.0,60.0 300.0,60.0");
        assert_eq!(polyline(&[], 5).points, "");
    }

    #[test]
    fn history_keeps_the_last_window() {
        let mut h = History::default();
        for i in 0..(SAMPLES as u64 + 10) {
            h.push(Sample {
                repair_rate: i,
                repair_todo: 0,
                unhealthy_chunks: 0,
                write_rate: 2 * i,
                read_rate: 0,
            });
        }
        let charts = h.charts();
        assert_eq!(charts.samples, SAMPLES);
        assert_eq!(charts.repair_rate.last, SAMPLES as u64 + 9);
        assert_eq!(charts.repair_rate.max, SAMPLES as u64 + 9);
        assert_eq!(charts.write_rate.last, 2 * (SAMPLES as u64 + 9));
        assert_eq!(charts.read_rate.max, 0);
    }
}
