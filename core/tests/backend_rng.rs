//! The backend's random stream is one per process; `params::with_backend_rng` makes a seeded
//! initialisation get the weights its seed names while other threads draw from it. Alone in its
//! own test binary: other tests drawing without taking turns would interleave with it.

use burn::prelude::*;
use flick_core::params::with_backend_rng;

#[test]
fn seeded_initialisations_side_by_side_get_the_weights_their_seeds_name() {
    let device = Device::default();
    let draw = |seed| {
        with_backend_rng(&device, Some(seed), || {
            let a = Tensor::<1>::random([256], burn::tensor::Distribution::Default, &device);
            // A nested initialiser keeps the turn.
            let b = with_backend_rng(&device, None, || {
                Tensor::<1>::random([256], burn::tensor::Distribution::Default, &device)
            });
            Tensor::cat(vec![a, b], 0)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        })
    };
    let reference = draw(7);
    assert_ne!(reference, draw(8));
    // Another thread draws (seeded and not) all the while; every seed-7 draw is the same.
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 0..2000u64 {
                let seed = (k % 2 == 0).then_some(k);
                with_backend_rng(&device, seed, || {
                    Tensor::<1>::random([64], burn::tensor::Distribution::Default, &device)
                });
            }
        });
        for _ in 0..100 {
            assert_eq!(draw(7), reference);
        }
    });
}
