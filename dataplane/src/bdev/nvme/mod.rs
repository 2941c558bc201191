//! Flint's own userspace NVMe driver, the core so far: typed registers
//! ([`regs`]), commands and statuses ([`cmd`]), DMA memory ([`dma`]), queue
//! pairs polled by phase bit with PRPs, retries and deadlines ([`qpair`]),
//! and the controller's bring-up and recovery as a polled state machine
//! ([`ctrl`]). [`fake`] is an in-memory controller on a thread that the
//! tests drive it against; [`vfio`] opens a real (or QEMU-emulated)
//! controller: container, group, device, BAR0, IOMMU mappings. Not yet:
//! the `nvme` backend of [`super::BlockDevice`].

pub mod cmd;
pub mod ctrl;
pub mod dma;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fake;
pub mod qpair;
pub mod regs;
pub mod vfio;

#[cfg(test)]
mod tests;
