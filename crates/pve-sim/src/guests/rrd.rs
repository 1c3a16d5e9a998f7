//! `GET .../qemu/{vmid}/rrddata` and `.../lxc/{vmid}/rrddata`: PVE 8's guest data sources at
//! 70 points per timeframe, deterministic for seed, guest and time (zero while stopped).

use serde_json::json;

use crate::error::PveError;
use crate::model::GuestKind;
use crate::params::P;
use crate::router::Routes;
use crate::rrd::{self, Timeframe};
use crate::util;

/// Registers both guest rrddata endpoints.
pub fn register(r: &mut Routes) {
    for kind in [GuestKind::Qemu, GuestKind::Lxc] {
        let path = match kind {
            GuestKind::Qemu => "/nodes/{node}/qemu/{vmid}/rrddata",
            GuestKind::Lxc => "/nodes/{node}/lxc/{vmid}/rrddata",
        };
        r.get(
            path,
            vec![
                P::node(),
                P::vmid(),
                P::str("timeframe").en(&["hour", "day", "week", "month", "year"]),
                P::str("cf").opt().en(&["AVERAGE", "MAX"]),
            ],
            move |cx, p| {
                let st = cx.read();
                let vmid = p.vmid()?;
                // PVE reads the RRD file of the vmid without loading the guest config.
                let g = st.guests.get(&vmid).filter(|g| g.kind == kind).ok_or_else(|| {
                    PveError::handler(format!(
                        "RRD error: opening '/var/lib/rrdcached/db/pve2-vm/{vmid}': No such file or directory"
                    ))
                })?;
                let tf = Timeframe::parse(p.str("timeframe")?).ok_or_else(|| PveError::handler("invalid timeframe"))?;
                let max = p.opt_str("cf") == Some("MAX");
                Ok(json!(rrd::guest(st.seed, g, tf, max, util::now())))
            },
        )
        .local();
    }
}
