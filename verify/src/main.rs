//! `ssd-verify`: until the verification matrix lands, prints how closely the three float64
//! forms (recurrent, quadratic, chunked) agree on a default problem with every option on.

use ssd_reference::{ssd_chunked, ssd_quadratic, ssd_recurrent, SsdError};
use ssd_verify::tolerance::{max_abs, rel_l2, FORMS_F64};
use ssd_verify::ProblemSpec;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, SsdError> {
    let mut ok = true;
    println!(
        "{:<44} {:<10} {:<14} {:>10} {:>10} {:>9}  result",
        "problem", "form", "tensor", "rel_l2", "max_abs", "threshold"
    );
    for (name, spec) in [
        (
            "plain b2 l200 h4 p16 g2 n16 Q64",
            ProblemSpec::plain(2, 200, 4, 16, 2, 16, 64),
        ),
        (
            "all options b2 l130 h4 p8 g2 n16 Q37",
            ProblemSpec::plain(2, 130, 4, 8, 2, 16, 37)
                .all_options()
                .seed(7),
        ),
    ] {
        let p = spec.build();
        let want = ssd_recurrent(&p.inputs(), &p.options)?;
        for (form, got) in [
            ("quadratic", ssd_quadratic(&p.inputs(), &p.options)?),
            ("chunked", ssd_chunked(&p.inputs(), &p.options)?),
        ] {
            for (tensor, g, w) in [
                ("out", &got.out, &want.out),
                ("final_states", &got.final_states, &want.final_states),
            ] {
                let r = rel_l2(g, w);
                let pass = r <= FORMS_F64;
                ok &= pass;
                println!(
                    "{name:<44} {form:<10} {tensor:<14} {r:>10.2e} {:>10.2e} {FORMS_F64:>9.0e}  {}",
                    max_abs(g, w),
                    if pass { "PASS" } else { "FAIL" }
                );
            }
        }
    }
    Ok(ok)
}
