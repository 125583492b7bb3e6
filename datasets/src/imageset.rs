/// N images of one size, u8, NHWC, channels 1 (gray) or 3 (RGB).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub pixels: Vec<u8>,
}

impl ImageSet {
    /// An empty set of `width`x`height` images with `channels` channels.
    pub fn new(width: u32, height: u32, channels: u8) -> Self {
        ImageSet {
            width,
            height,
            channels,
            pixels: Vec::new(),
        }
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        match self.image_len() {
            0 => 0,
            n => self.pixels.len() / n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per image: `width * height * channels`.
    pub fn image_len(&self) -> usize {
        self.width as usize * self.height as usize * self.channels as usize
    }

    /// The pixels of image `i`, HWC. Panics when `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Appends one image. Panics when `pixels` is not `image_len()` bytes: that is a bug
    /// in the caller, never a property of user data.
    pub fn push(&mut self, pixels: &[u8]) {
        assert_eq!(
            pixels.len(),
            self.image_len(),
            "ImageSet::push: image of {} bytes into a set of {}x{}x{} images",
            pixels.len(),
            self.width,
            self.height,
            self.channels
        );
        self.pixels.extend_from_slice(pixels);
    }
}

/// ITU-R BT.601 luma in fixed point, so that gray conversion is exact integer arithmetic
/// and therefore identical on every machine.
pub(crate) fn luma(r: u8, g: u8, b: u8) -> u8 {
    let y = 19595 * r as u32 + 38470 * g as u32 + 7471 * b as u32;
    ((y + (1 << 15)) >> 16) as u8
}

pub(crate) fn rgb_to_gray(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| luma(p[0], p[1], p[2]))
        .collect()
}

pub(crate) fn gray_to_rgb(gray: &[u8]) -> Vec<u8> {
    gray.iter().flat_map(|&v| [v, v, v]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_index() {
        let mut set = ImageSet::new(2, 1, 3);
        assert!(set.is_empty());
        set.push(&[1, 2, 3, 4, 5, 6]);
        set.push(&[7, 8, 9, 10, 11, 12]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.image_len(), 6);
        assert_eq!(set.image(1), &[7, 8, 9, 10, 11, 12]);
    }

    #[test]
    #[should_panic(expected = "ImageSet::push")]
    fn push_wrong_size_panics() {
        ImageSet::new(2, 2, 1).push(&[0; 3]);
    }

    #[test]
    fn luma_keeps_gray_and_extremes() {
        for v in [0u8, 1, 127, 128, 254, 255] {
            assert_eq!(luma(v, v, v), v);
        }
        assert!(luma(0, 255, 0) > luma(255, 0, 0));
        assert!(luma(255, 0, 0) > luma(0, 0, 255));
    }
}
