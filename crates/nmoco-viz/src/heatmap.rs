//! Confusion-matrix heat maps.

use std::path::Path;

use crate::canvas::{BLACK, Canvas, Error, GREY, WHITE};

/// Render `confusion[true][predicted]` as a heat map (rows normalised per true class, white → dark
/// blue), with class indices on the axes and a title. Cells are at least 4 px; large matrices
/// (e.g. 101 classes) stay readable because labels are drawn only every few classes.
pub fn confusion_png(confusion: &[Vec<u64>], title: &str, path: &Path) -> Result<(), Error> {
    confusion_canvas(confusion, title).save_png(path)
}

/// The canvas [`confusion_png`] writes.
pub fn confusion_canvas(confusion: &[Vec<u64>], title: &str) -> Canvas {
    let k = confusion.len().max(1);
    let cell = (480 / k).clamp(4, 48) as i64;
    let margin_l = 40i64;
    let margin_t = 36i64;
    let size = cell * k as i64;
    let w = (margin_l + size + 16).max(Canvas::text_width(title, 2) + 16);
    let h = margin_t + size + 40;
    let mut c = Canvas::new(w as usize, h as usize, WHITE);
    c.text(8, 8, title, 2, BLACK);
    let label_every = ((k as i64 * 14) / size.max(1) + 1).max(1) as usize;
    for (i, row) in confusion.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (j, &v) in row.iter().enumerate() {
            let f = if total > 0 {
                v as f64 / total as f64
            } else {
                0.0
            };
            let col = [
                (255.0 * (1.0 - f * 0.9)) as u8,
                (255.0 * (1.0 - f * 0.75)) as u8,
                (255.0 * (1.0 - f * 0.35)) as u8,
            ];
            c.fill_rect(
                margin_l + j as i64 * cell,
                margin_t + i as i64 * cell,
                cell,
                cell,
                col,
            );
        }
        if i % label_every == 0 {
            let s = i.to_string();
            c.text(
                margin_l - 4 - Canvas::text_width(&s, 1),
                margin_t + i as i64 * cell + (cell - 7) / 2,
                &s,
                1,
                BLACK,
            );
            c.text(
                margin_l + i as i64 * cell + (cell - Canvas::text_width(&s, 1)) / 2,
                margin_t + size + 4,
                &s,
                1,
                BLACK,
            );
        }
    }
    c.rect(margin_l - 1, margin_t - 1, size + 2, size + 2, GREY);
    c.text(
        margin_l,
        margin_t + size + 16,
        "PREDICTED (X) / TRUE (Y)",
        1,
        BLACK,
    );
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_is_darkest() {
        let m = vec![vec![9, 1], vec![0, 10]];
        let c = confusion_canvas(&m, "T");
        // Cell size 48 for 2 classes; sample cell centres.
        let at = |i: usize, j: usize| c.get(40 + j * 48 + 24, 36 + i * 48 + 24);
        assert!(at(1, 1)[0] < at(0, 0)[0]);
        assert!(at(0, 0)[0] < at(0, 1)[0]);
        assert_eq!(at(1, 0), WHITE);
        let dir = tempfile::tempdir().unwrap();
        confusion_png(&m, "T", &dir.path().join("c.png")).unwrap();
        let big: Vec<Vec<u64>> = (0..101)
            .map(|i| (0..101).map(|j| u64::from(i == j)).collect())
            .collect();
        let c = confusion_canvas(&big, "NCALTECH101");
        assert!(c.width >= 101 * 4);
    }
}
