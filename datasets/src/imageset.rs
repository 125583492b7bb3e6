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

    /// A set of `count` black images, in a buffer from [`pixel_buffer`].
    pub fn zeroed(width: u32, height: u32, channels: u8, count: usize) -> Self {
        let mut set = ImageSet::new(width, height, channels);
        set.pixels = pixel_buffer(count * set.image_len());
        set
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

/// A zeroed buffer of `len` bytes for the pixels of an image set.
///
/// Resizing reads a big set row by row with strides (the column pass, nearest's
/// sampled rows), so with 4 KiB pages most rows of a large image cost a TLB miss, and
/// on a virtual machine every miss is a two-level page walk. A buffer of several MiB
/// is therefore advised to use transparent huge pages on Linux, which systems whose
/// policy is `madvise` (Debian's default) honour only when asked. The advice changes
/// no contents; where it is refused, or on other systems, this is a plain buffer.
pub fn pixel_buffer(len: usize) -> Vec<u8> {
    // For a large length the allocator maps fresh zero pages without touching them,
    // so the advice still applies to every page when the caller first writes.
    let mut buffer = vec![0u8; len];
    advise_huge_pages(&mut buffer);
    buffer
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(buffer: &mut [u8]) {
    const HUGE_PAGE: usize = 2 << 20;
    if buffer.len() < 2 * HUGE_PAGE {
        return;
    }
    let start = buffer.as_mut_ptr() as usize;
    let first = start.next_multiple_of(HUGE_PAGE);
    let last = (start + buffer.len()) / HUGE_PAGE * HUGE_PAGE;
    if last > first {
        // SAFETY: the range lies inside `buffer`, which this function borrows mutably;
        // MADV_HUGEPAGE only changes how the kernel backs the pages, never their
        // contents, and a failure (an old kernel, THP disabled) is harmless.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_buffer: &mut [u8]) {}

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
    fn pixel_buffers_are_zeroed_and_writable_at_every_size() {
        // Below, at and well above the size that gets the huge-page advice, and not
        // a whole number of huge pages.
        for len in [0, 1, 4 << 20, (9 << 20) + 12_345] {
            let mut buffer = pixel_buffer(len);
            assert_eq!(buffer.len(), len);
            assert!(buffer.iter().all(|&b| b == 0));
            for (i, b) in buffer.iter_mut().enumerate() {
                *b = i as u8;
            }
            assert!(buffer.iter().enumerate().all(|(i, &b)| b == i as u8));
        }
        let set = ImageSet::zeroed(4, 3, 3, 5);
        assert_eq!((set.len(), set.pixels.len()), (5, 4 * 3 * 3 * 5));
    }

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
