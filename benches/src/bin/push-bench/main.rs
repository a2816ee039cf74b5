//! `push-bench`: drives a running push server and reports honestly measured figures.
//!
//! Scenarios (one file each): `idle`, `fanout` and `unicast` (`deliver`), `churn`, `soak`,
//! `hostile`, `flood`; the command line is in `cli`. Connections are spread over worker
//! processes (this binary re-executed as `push-bench worker`), because one process can hold at
//! most about 19,000 sockets on the target machines.

mod binary_publish;
mod churn;
mod cli;
mod coordinator;
mod deliver;
mod failover;
mod flood;
mod hostile;
mod hostile_worker;
mod idle;
mod mqtt;
mod nats;
mod peer;
mod procstat;
mod publish;
mod publish_ack;
mod report;
mod resilient;
mod soak;
mod spec;
mod worker;
mod ws;

use clap::Parser;
use push_client::http_api as http;

use cli::{specs, tls_of, Cli, Cmd, Common};
use deliver::Target;
use spec::WorkerSpec;

/// What a scenario returns: whether every figure it checks came out clean.
type Res = Result<bool, Box<dyn std::error::Error>>;

fn main() {
    let cli = Cli::parse();
    if let Cmd::Worker { spec } = &cli.cmd {
        let spec: WorkerSpec = serde_json::from_str(spec).expect("worker spec from coordinator");
        if let Err(e) = worker::run(spec) {
            eprintln!("worker failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(why) = cli.cmd.peer_refusal() {
        eprintln!("push-bench: {why}");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async {
        let r = match cli.cmd {
            Cmd::Idle {
                common,
                conns,
                hold,
                ws,
                room,
            } => idle::run(common, conns, hold, ws, room).await,
            Cmd::Hostile { common, hostile } => hostile::run(common, hostile).await,
            Cmd::Flood { common, flood } => flood::run(common, flood).await,
            Cmd::Soak { common, soak } => soak::run(common, soak).await,
            Cmd::Fanout {
                common,
                load,
                broadcast,
            } => {
                deliver::run(
                    common,
                    load,
                    if broadcast {
                        Target::Broadcast
                    } else {
                        Target::Room
                    },
                )
                .await
            }
            Cmd::Unicast { common, load } => deliver::run(common, load, Target::Users).await,
            Cmd::PublishAck {
                common,
                conns,
                in_flight,
                messages,
                size,
            } => publish_ack::run(common, conns, in_flight, messages, size).await,
            Cmd::Churn {
                common,
                rate,
                seconds,
                workers,
            } => churn::run(common, rate, seconds, workers).await,
            Cmd::Worker { .. } => unreachable!("handled above"),
        };
        match r {
            Ok(ok) => i32::from(!ok),
            Err(e) => {
                eprintln!("push-bench: {e}");
                2
            }
        }
    });
    std::process::exit(code);
}
