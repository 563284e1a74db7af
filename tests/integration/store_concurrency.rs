//! The store under concurrent use: racing inserts of the same network
//! identity, an atomic state change with its history, and two handles
//! (daemon and CLI) writing one file.

use crate::common;

use common::daemon::{sample_image, sample_vm};
use hatch::model::VmState;
use hatch::store::{Store, StoreError};

#[test]
fn of_thirty_racing_inserts_of_one_ip_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::path_in(dir.path())).unwrap();
    let wanted = sample_vm("img-x", 1).network.unwrap().guest_ip;
    let handles: Vec<_> = (0..30u8)
        .map(|n| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut vm = sample_vm("img-x", n + 10);
                vm.network.as_mut().unwrap().guest_ip = wanted;
                store.insert_vm(&vm, None)
            })
        })
        .collect();
    let results: Vec<Result<(), StoreError>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, StoreError::Conflict { field: "guest_ip" })));
    assert_eq!(store.list_vms().unwrap().len(), 1);
}

#[test]
fn a_state_change_and_its_history_are_written_together() {
    let store = Store::open_in_memory().unwrap();
    let mut vm = sample_vm("img-x", 1);
    vm.state = VmState::Starting;
    store.insert_vm(&vm, None).unwrap();
    vm.state = VmState::Running;
    assert!(store
        .update_vm_with_transition(&vm, Some(VmState::Starting), None)
        .unwrap());
    assert_eq!(store.get_vm(&vm.id).unwrap().unwrap().state, VmState::Running);
    // The insert recorded the first state with the row, the update the second.
    let events = store.list_transitions(&vm.id).unwrap();
    let states: Vec<VmState> = events.iter().map(|e| e.to_state).collect();
    assert_eq!(states, vec![VmState::Starting, VmState::Running]);

    // A change that violates a constraint leaves neither row nor history changed.
    let other = sample_vm("img-x", 2);
    store.insert_vm(&other, None).unwrap();
    let mut clash = vm.clone();
    clash.state = VmState::Stopped;
    clash.network.as_mut().unwrap().ssh_port = other.network.unwrap().ssh_port;
    assert!(matches!(
        store.update_vm_with_transition(&clash, Some(VmState::Running), Some("stop")),
        Err(StoreError::Conflict { field: "ssh_port" })
    ));
    assert_eq!(store.get_vm(&vm.id).unwrap().unwrap().state, VmState::Running);
    assert_eq!(store.list_transitions(&vm.id).unwrap().len(), 2);

    let mut ghost = sample_vm("img-x", 3);
    ghost.id = "vm-ghost".into();
    assert!(!store.update_vm_with_transition(&ghost, None, None).unwrap());
    assert!(store.list_transitions("vm-ghost").unwrap().is_empty());
}

#[test]
fn two_handles_on_one_file_both_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(dir.path());
    let daemon = Store::open(&path).unwrap();
    let cli = Store::open(&path).unwrap();
    let writers: Vec<_> = [daemon.clone(), cli.clone()]
        .into_iter()
        .map(|store| {
            std::thread::spawn(move || {
                for _ in 0..25 {
                    store.insert_image(&sample_image("img")).unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("no writer failed with a busy database");
    }
    assert_eq!(daemon.list_images().unwrap().len(), 50);
    assert_eq!(cli.list_images().unwrap().len(), 50);
}
