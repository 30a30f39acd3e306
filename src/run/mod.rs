//! Doing what a plan says, on real hosts and repositories. This part owns
//! the execution of actions: for now the backup of one VM (`vm_backup`),
//! the closed loop that always removes its snapshot. It never decides what
//! to do; the planner does.

pub mod cbt_reset;
pub mod connect;
pub mod consistency;
pub mod drill;
pub mod drill_network;
pub mod export;
pub mod guest_check;
pub mod guest_ids;
pub mod import;
pub mod installation;
pub mod ovf;
pub mod partition;
pub mod restore;
pub mod runlock;
pub mod snapshot_lifetime;
pub mod throttle;
pub mod vm_backup;
