//! The time of one gradient sum across the ranks against its size: `Mpi::start_sum` then
//! `finish_sum`, nothing else running, median of repeated rounds after a warm-up. Rank 0
//! prints one JSON line per size: `{"ranks", "bytes", "seconds", "rounds"}`.
//!
//! `RAYON_NUM_THREADS=1 mpirun -np 2 target/release/examples/sum_sizes [--max-mib M]`

use std::process::ExitCode;
use std::time::Instant;

use nn::distributed::Collective;

fn main() -> ExitCode {
    let max_mib: usize = std::env::args()
        .skip_while(|a| a != "--max-mib")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    nn_mpi::run(|comm| {
        let mut bytes = 4 << 10;
        while bytes <= max_mib << 20 {
            let len = bytes / 4;
            let mut data = vec![1.0f32; len];
            let rounds = (64 << 20) / bytes.max(1 << 20) + 5;
            let mut times = Vec::with_capacity(rounds);
            for round in 0..rounds + 3 {
                // The ranks start together: a barrier of one value.
                comm.all_gather(round as u64)?;
                let start = Instant::now();
                comm.start_sum(data)?;
                data = comm.finish_sum()?;
                if round >= 3 {
                    times.push(start.elapsed().as_secs_f64());
                }
            }
            times.sort_by(f64::total_cmp);
            if comm.rank() == 0 {
                println!(
                    "{{\"ranks\": {}, \"bytes\": {bytes}, \"seconds\": {:.9}, \"rounds\": {rounds}}}",
                    comm.size(),
                    times[times.len() / 2]
                );
            }
            bytes *= 4;
        }
        Ok(())
    })
}
