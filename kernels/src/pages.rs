//! How large buffers are backed by the system's pages.
//!
//! A training batch gathers its samples from anywhere in the data set. With the 4 KiB pages a
//! program gets by default, a data set of 188 MB (MNIST's 60 000 images in f32) spans 46 000
//! pages, far more than the TLB holds, so nearly every sample gathered first waits for a page
//! walk that itself misses the caches. Backed by 2 MiB pages it spans 90, which the TLB holds.
//! Linux gives a program huge pages (transparent huge pages) for the memory it asks them for
//! with `madvise`, the setting most distributions ship; with the setting `always` it would
//! have them anyway, with `never` not at all.

use aligned_vec::{AVec, ConstAlign};

/// The size of a huge page on the platforms that have transparent huge pages (x86-64 and
/// AArch64 with 4 KiB base pages): smaller buffers are left alone.
const HUGE_PAGE: usize = 2 << 20;

/// Asks the system to back `buf`'s allocated capacity with huge pages (see the module's
/// documentation). The system backs pages when they are first written: call this on a freshly
/// reserved buffer, before filling it. A hint: it never changes the contents, and where the
/// system declines (huge pages disabled, another OS, a buffer under 2 MiB) nothing happens.
pub fn advise_huge_pages(buf: &mut AVec<f32, ConstAlign<64>>) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf reads a constant of the system; it touches no memory of ours.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let Ok(page) = usize::try_from(page) else {
            return;
        };
        if page == 0 {
            return;
        }
        let start = buf.as_mut_ptr() as usize;
        let end = start + buf.capacity() * std::mem::size_of::<f32>();
        // madvise takes whole pages: those wholly inside the allocation.
        let first = start.next_multiple_of(page);
        let last = end / page * page;
        if last <= first || last - first < HUGE_PAGE {
            return;
        }
        // SAFETY: [first, last) lies within `buf`'s allocation, which we hold exclusively;
        // MADV_HUGEPAGE changes how the range's pages are backed, never what they hold, and a
        // refusal (an error return) leaves the memory as it was.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Advised before or after it is written, small or large, empty or not, a buffer keeps
    /// what it holds.
    #[test]
    fn advice_changes_no_contents() {
        for len in [0, 1, 1000, (HUGE_PAGE / 4) + 17, 3 * HUGE_PAGE / 4] {
            let mut fresh: AVec<f32, ConstAlign<64>> = AVec::with_capacity(64, len);
            advise_huge_pages(&mut fresh);
            fresh.resize(len, 1.5);
            assert!(fresh.iter().all(|&v| v == 1.5));
            let mut written =
                AVec::<f32, ConstAlign<64>>::from_iter(64, (0..len).map(|i| i as f32));
            advise_huge_pages(&mut written);
            assert!(written.iter().enumerate().all(|(i, &v)| v == i as f32));
        }
    }
}
