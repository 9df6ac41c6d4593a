//! `starling-loadtest`: will drive a running node or cluster over QUIC or HTTP and check
//! that nothing acknowledged was lost. It needs the node's front doors, which do not exist
//! yet, so for now it says so and exits with an error.

fn main() -> std::process::ExitCode {
    eprintln!("starling-loadtest: needs a running node with network front doors, which Starling does not have yet");
    std::process::ExitCode::from(1)
}
