//! The gateway hop: one cheap call (a cache read the node answers from its
//! own memory), made straight to the node and through the gateway at the
//! same concurrency; the two figures side by side are what the hop costs.

use chaos::system::{Kind, System};

use super::{addrs, client_for, gateway_addr, Case, Via};
use crate::load::{Measured, Plan};

pub async fn run(sys: &mut System, case: &Case, plan: Plan) -> anyhow::Result<Measured> {
    anyhow::ensure!(
        case.scenario == "hop",
        "no gateway scenario {}",
        case.scenario
    );
    let node = addrs(sys, Kind::Cache)
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no cache node"))?;
    let c = match case.via {
        Via::Direct => client_for(&node, None)?,
        Via::Gateway => client_for(&gateway_addr(sys), Some(&node))?,
    };
    let plan = super::shaped(plan, case.clients);
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    super::cache::hit(c, plan, &run_id).await
}
