//! Sample grids: the first images of a set tiled into one PNG, for people to look at.

use std::path::Path;

use gantry_datasets::ImageSet;

use crate::StageError;

/// Tile up to `max` images of `set` into a near-square grid with a 2-pixel gutter. Tiles
/// are scaled (nearest) to about 64 pixels: big enough to see, small enough to keep.
pub fn save_grid(set: &ImageSet, max: usize, path: &Path) -> Result<(), StageError> {
    let n = set.len().min(max);
    if n == 0 {
        return Ok(());
    }
    let cols = (n as f64).sqrt().ceil() as u32;
    let rows = (n as u32).div_ceil(cols);
    let longest = set.width.max(set.height).max(1);
    let (w, h) = if longest < 64 {
        let up = 64 / longest;
        (set.width * up, set.height * up)
    } else {
        (
            (set.width * 64 / longest).max(1),
            (set.height * 64 / longest).max(1),
        )
    };
    let gutter = 2;
    let (gw, gh) = (cols * (w + gutter) + gutter, rows * (h + gutter) + gutter);
    let mut out = image::RgbImage::from_pixel(gw, gh, image::Rgb([32, 32, 32]));
    let c = set.channels as usize;
    for i in 0..n {
        let img = set.image(i);
        let (gx, gy) = ((i as u32 % cols), (i as u32 / cols));
        let (ox, oy) = (gutter + gx * (w + gutter), gutter + gy * (h + gutter));
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = (x * set.width / w, y * set.height / h);
                let src = ((sy * set.width + sx) as usize) * c;
                let px = if c == 1 {
                    [img[src]; 3]
                } else {
                    [img[src], img[src + 1], img[src + 2]]
                };
                out.put_pixel(ox + x, oy + y, image::Rgb(px));
            }
        }
    }
    out.save(path)
        .map_err(|e| StageError::Failed(format!("{}: cannot write PNG: {e}", path.display())))
}
