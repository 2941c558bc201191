//! VFIO type1: the controller's IOMMU group bound to a container, its
//! device file, BAR0 mapped as the driver's [`Mmio`] window, and DMA
//! memory mapped into the IOMMU at addresses the driver chooses (a bump
//! allocator from 256 MiB up: user addresses may not fit the IOMMU's
//! width). Each failure says what to do: no IOMMU group, bound to another
//! driver, no permission, a group that is not viable.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::dma::{DmaMap, PAGE};
use super::regs::Mmio;

const VFIO_TYPE: u64 = b';' as u64;
const fn vfio_io(nr: u64) -> u64 {
    (VFIO_TYPE << 8) | (100 + nr)
}
const GET_API_VERSION: u64 = vfio_io(0);
const CHECK_EXTENSION: u64 = vfio_io(1);
const SET_IOMMU: u64 = vfio_io(2);
const GROUP_GET_STATUS: u64 = vfio_io(3);
const GROUP_SET_CONTAINER: u64 = vfio_io(4);
const GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
const DEVICE_GET_REGION_INFO: u64 = vfio_io(8);
const IOMMU_MAP_DMA: u64 = vfio_io(13);
const IOMMU_UNMAP_DMA: u64 = vfio_io(14);
const TYPE1V2_IOMMU: u64 = 3;
const GROUP_VIABLE: u32 = 1;
const BAR0_REGION: u32 = 0;
const CONFIG_REGION: u32 = 7;
/// Where the IOVAs the driver hands out start.
const IOVA_BASE: u64 = 0x1000_0000;

#[repr(C)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

#[repr(C)]
struct RegionInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    cap_offset: u32,
    size: u64,
    offset: u64,
}

#[repr(C)]
struct DmaMapArg {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

fn err(what: String) -> io::Error {
    io::Error::other(what)
}

/// An opened controller: container, group and device files, BAR0.
pub struct Vfio {
    container: File,
    _group: File,
    device: File,
    bar: *mut u8,
    bar_len: usize,
    next_iova: AtomicU64,
}

// SAFETY: BAR0 is device memory mapped for this process; every access goes
// through volatile 32-bit reads and writes in `Mmio`, which the device
// serializes. The files are plain descriptors.
unsafe impl Send for Vfio {}
// SAFETY: as above.
unsafe impl Sync for Vfio {}

impl Vfio {
    /// Opens PCI device `bdf` (`0000:00:04.0`), which must be bound to
    /// `vfio-pci`, in a container of its own, with bus mastering on.
    pub fn open(bdf: &str) -> io::Result<Vfio> {
        let dev = Path::new("/sys/bus/pci/devices").join(bdf);
        if !dev.exists() {
            return Err(err(format!("no PCI device {bdf} (see lspci -D)")));
        }
        let group = std::fs::read_link(dev.join("iommu_group")).map_err(|_| {
            err(format!(
                "{bdf} has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line)"
            ))
        })?;
        let group = group
            .file_name()
            .and_then(|g| g.to_str())
            .ok_or_else(|| err(format!("{bdf}: unreadable IOMMU group link")))?
            .to_string();
        let driver = std::fs::read_link(dev.join("driver"))
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
        if driver.as_deref() != Some("vfio-pci") {
            return Err(err(format!(
                "{bdf} is bound to {}, not vfio-pci: echo {bdf} > /sys/bus/pci/devices/{bdf}/driver/unbind; \
                 echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override; echo {bdf} > /sys/bus/pci/drivers_probe",
                driver.as_deref().unwrap_or("no driver")
            )));
        }
        let open = |p: &str| {
            OpenOptions::new().read(true).write(true).open(p).map_err(|e| {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    err(format!("{p}: permission denied (run as root, or give this user the group's device file)"))
                } else {
                    err(format!("{p}: {e} (is the vfio-pci module loaded?)"))
                }
            })
        };
        let container = open("/dev/vfio/vfio")?;
        let group_file = open(&format!("/dev/vfio/{group}"))?;
        // SAFETY: plain ioctls on descriptors we own, with arguments of the
        // sizes the kernel's VFIO ABI defines.
        unsafe {
            if libc::ioctl(container.as_raw_fd(), GET_API_VERSION as _) != 0 {
                return Err(err("VFIO API version is not 0".into()));
            }
            if libc::ioctl(container.as_raw_fd(), CHECK_EXTENSION as _, TYPE1V2_IOMMU) != 1 {
                return Err(err("the kernel's VFIO lacks the type1v2 IOMMU".into()));
            }
            let mut st = GroupStatus {
                argsz: std::mem::size_of::<GroupStatus>() as u32,
                flags: 0,
            };
            libc::ioctl(group_file.as_raw_fd(), GROUP_GET_STATUS as _, &mut st);
            if st.flags & GROUP_VIABLE == 0 {
                return Err(err(format!(
                    "IOMMU group {group} is not viable: bind every device in /sys/kernel/iommu_groups/{group}/devices to vfio-pci"
                )));
            }
            let cfd = container.as_raw_fd();
            if libc::ioctl(group_file.as_raw_fd(), GROUP_SET_CONTAINER as _, &cfd) != 0 {
                return Err(err(format!(
                    "VFIO_GROUP_SET_CONTAINER: {}",
                    io::Error::last_os_error()
                )));
            }
            if libc::ioctl(cfd, SET_IOMMU as _, TYPE1V2_IOMMU) != 0 {
                return Err(err(format!(
                    "VFIO_SET_IOMMU: {}",
                    io::Error::last_os_error()
                )));
            }
        }
        let name = CString::new(bdf).map_err(|_| err("bad PCI address".into()))?;
        // SAFETY: the argument is a NUL-terminated string, as the ABI wants.
        let dfd = unsafe {
            libc::ioctl(
                group_file.as_raw_fd(),
                GROUP_GET_DEVICE_FD as _,
                name.as_ptr(),
            )
        };
        if dfd < 0 {
            return Err(err(format!(
                "VFIO_GROUP_GET_DEVICE_FD {bdf}: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: a fresh descriptor the kernel gave us, owned from here.
        let device = unsafe { File::from_raw_fd(dfd) };
        let region = |index: u32| -> io::Result<RegionInfo> {
            let mut ri = RegionInfo {
                argsz: std::mem::size_of::<RegionInfo>() as u32,
                flags: 0,
                index,
                cap_offset: 0,
                size: 0,
                offset: 0,
            };
            // SAFETY: a region-info ioctl with a struct of the ABI's layout.
            if unsafe { libc::ioctl(device.as_raw_fd(), DEVICE_GET_REGION_INFO as _, &mut ri) } != 0
            {
                return Err(err(format!(
                    "VFIO region {index}: {}",
                    io::Error::last_os_error()
                )));
            }
            Ok(ri)
        };
        let bar0 = region(BAR0_REGION)?;
        let cfg = region(CONFIG_REGION)?;
        // SAFETY: maps the device's BAR0 region (its size and offset from
        // the kernel) shared, for volatile register accesses only.
        let bar = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bar0.size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                device.as_raw_fd(),
                bar0.offset as libc::off_t,
            )
        };
        if bar == libc::MAP_FAILED {
            return Err(err(format!("mmap BAR0: {}", io::Error::last_os_error())));
        }
        // Memory space and bus mastering in the PCI command register.
        let mut cmd = [0u8; 2];
        use std::os::unix::fs::FileExt;
        device.read_exact_at(&mut cmd, cfg.offset + 4)?;
        let v = u16::from_le_bytes(cmd) | 0x6;
        device.write_all_at(&v.to_le_bytes(), cfg.offset + 4)?;
        Ok(Vfio {
            container,
            _group: group_file,
            device,
            bar: bar.cast(),
            bar_len: bar0.size as usize,
            next_iova: AtomicU64::new(IOVA_BASE),
        })
    }

    /// The device file.
    pub fn device(&self) -> &File {
        &self.device
    }
}

impl Mmio for std::sync::Arc<Vfio> {
    fn read32(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.bar_len, "register past BAR0");
        // SAFETY: in BAR0 (asserted), 4-byte aligned register offsets.
        unsafe { (self.bar.add(off) as *const u32).read_volatile() }
    }

    fn write32(&self, off: usize, v: u32) {
        assert!(off + 4 <= self.bar_len, "register past BAR0");
        // SAFETY: as above.
        unsafe { (self.bar.add(off) as *mut u32).write_volatile(v) }
    }
}

impl DmaMap for Vfio {
    fn map(&self, vaddr: u64, len: usize) -> io::Result<u64> {
        let len = len.div_ceil(PAGE) * PAGE;
        let iova = self.next_iova.fetch_add(len as u64, Ordering::Relaxed);
        let arg = DmaMapArg {
            argsz: std::mem::size_of::<DmaMapArg>() as u32,
            flags: 3, // read | write
            vaddr,
            iova,
            size: len as u64,
        };
        // SAFETY: maps `len` bytes of our own memory at `vaddr` (a live
        // DmaBuf, unmapped only when the container closes) for the device.
        if unsafe { libc::ioctl(self.container.as_raw_fd(), IOMMU_MAP_DMA as _, &arg) } != 0 {
            return Err(err(format!(
                "VFIO_IOMMU_MAP_DMA: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(iova)
    }

    fn unmap(&self, iova: u64, len: usize) {
        #[repr(C)]
        struct Unmap {
            argsz: u32,
            flags: u32,
            iova: u64,
            size: u64,
        }
        let arg = Unmap {
            argsz: std::mem::size_of::<Unmap>() as u32,
            flags: 0,
            iova,
            size: (len.div_ceil(PAGE) * PAGE) as u64,
        };
        // SAFETY: unmaps a range this container mapped.
        unsafe { libc::ioctl(self.container.as_raw_fd(), IOMMU_UNMAP_DMA as _, &arg) };
    }
}
