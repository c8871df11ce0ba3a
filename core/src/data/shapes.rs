//! Procedural captioned clips: an endless, deterministic `(seed, index) → (clip, caption,
//! attributes)` source of short videos of one or two moving anti-aliased shapes.
//!
//! Every clip is drawn analytically (signed distances, one-pixel anti-aliasing), so any size and
//! clip length works and nothing is stored. A fixed list of (shape, colour, motion) combinations
//! is held out: no training clip contains an object with one of them, and the evaluation split is
//! made of exactly those combinations (compositional generalisation: every word was seen, never
//! together).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Clip;

macro_rules! attribute {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }
        impl $name {
            /// Every value, in class-index order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Class index (position in [`Self::ALL`]).
            pub fn index(self) -> usize { self as usize }
            /// The canonical word used in evaluation prompts.
            pub fn word(self) -> &'static str { match self { $($name::$variant => $word),+ } }
        }
    };
}

attribute!(/// Object outline.
    Shape { Circle => "circle", Square => "square", Triangle => "triangle", Cross => "cross" });
attribute!(/// Object colour.
    Color { Red => "red", Green => "green", Blue => "blue", Yellow => "yellow", Magenta => "magenta",
            Cyan => "cyan", White => "white" });
attribute!(/// Object size.
    Size { Small => "small", Large => "large" });
attribute!(/// How the object moves over the clip (image coordinates: up is towards row 0).
    Motion { Left => "left", Right => "right", Up => "up", Down => "down", Still => "still",
             Clockwise => "clockwise" });
attribute!(/// Clip background.
    Background { Black => "black", Gray => "gray", Navy => "navy", DarkGreen => "dark green" });

impl Color {
    /// Linear RGB in [0, 1].
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Color::Red => [0.95, 0.1, 0.1],
            Color::Green => [0.1, 0.85, 0.15],
            Color::Blue => [0.15, 0.3, 1.0],
            Color::Yellow => [0.95, 0.9, 0.1],
            Color::Magenta => [0.9, 0.1, 0.9],
            Color::Cyan => [0.1, 0.9, 0.9],
            Color::White => [1.0, 1.0, 1.0],
        }
    }
}

impl Background {
    /// Linear RGB in [0, 1].
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Background::Black => [0.0, 0.0, 0.0],
            Background::Gray => [0.45, 0.45, 0.45],
            Background::Navy => [0.0, 0.0, 0.4],
            Background::DarkGreen => [0.0, 0.3, 0.05],
        }
    }
}

/// One object of a clip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    pub color: Color,
    pub size: Size,
    pub motion: Motion,
}

impl Object {
    /// The (shape, colour, motion) triple that decides whether the object is held out.
    pub fn combo(&self) -> (Shape, Color, Motion) {
        (self.shape, self.color, self.motion)
    }
}

/// Everything that was drawn: the first object is the one the probe (eval) reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    pub objects: Vec<Object>,
    pub background: Background,
}

impl Attributes {
    /// The first (main) object.
    pub fn main(&self) -> &Object {
        &self.objects[0]
    }
}

/// Which part of the attribute space a clip comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Every object avoids the held-out combinations.
    Train,
    /// One object whose (shape, colour, motion) is held out.
    HeldOut,
}

/// The held-out (shape, colour, motion) combinations: 12 of the 168, spread so each shape,
/// colour and motion appears at least once. Never drawn in [`Split::Train`] clips.
pub const HELD_OUT: [(Shape, Color, Motion); 12] = [
    (Shape::Circle, Color::Red, Motion::Left),
    (Shape::Circle, Color::Cyan, Motion::Clockwise),
    (Shape::Circle, Color::Yellow, Motion::Down),
    (Shape::Square, Color::Blue, Motion::Up),
    (Shape::Square, Color::Green, Motion::Still),
    (Shape::Square, Color::Magenta, Motion::Right),
    (Shape::Triangle, Color::Yellow, Motion::Right),
    (Shape::Triangle, Color::White, Motion::Left),
    (Shape::Triangle, Color::Red, Motion::Clockwise),
    (Shape::Cross, Color::Magenta, Motion::Down),
    (Shape::Cross, Color::White, Motion::Up),
    (Shape::Cross, Color::Green, Motion::Still),
];

/// Whether a (shape, colour, motion) triple is in [`HELD_OUT`].
pub fn is_held_out(combo: (Shape, Color, Motion)) -> bool {
    HELD_OUT.contains(&combo)
}

/// Clip geometry and sampling options of the procedural source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapesConfig {
    /// Frames per clip (1 = images).
    pub frames: usize,
    /// Height in pixels (multiple of 8).
    pub height: usize,
    /// Width in pixels (multiple of 8).
    pub width: usize,
    /// Probability that a training clip has a second object.
    pub two_object_prob: f32,
}

impl Default for ShapesConfig {
    fn default() -> Self {
        Self {
            frames: 8,
            height: 32,
            width: 32,
            two_object_prob: 0.25,
        }
    }
}

/// One sample of the source.
#[derive(Clone, Debug)]
pub struct ShapesSample {
    pub clip: Clip,
    pub caption: String,
    pub attributes: Attributes,
}

/// The endless procedural source. Cheap to clone; sampling is a pure function of
/// `(seed, split, index)`.
#[derive(Clone, Debug)]
pub struct ShapesSource {
    pub config: ShapesConfig,
    pub seed: u64,
}

impl ShapesSource {
    /// Fails with a message if the geometry is unusable.
    pub fn new(config: ShapesConfig, seed: u64) -> Result<Self, crate::Error> {
        if config.frames == 0 {
            return Err(crate::Error::Config(
                "shapes: frames must be ≥ 1 (1 = images)".into(),
            ));
        }
        if config.height == 0
            || config.width == 0
            || !config.height.is_multiple_of(8)
            || !config.width.is_multiple_of(8)
        {
            return Err(crate::Error::Config(format!(
                "shapes: height and width must be positive multiples of 8, got {}×{}",
                config.height, config.width
            )));
        }
        Ok(Self { config, seed })
    }

    fn rng(&self, split: Split, index: u64) -> ChaCha8Rng {
        // SplitMix-style mixing so neighbouring indices give unrelated streams.
        let mut z = self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((split as u64) << 63);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
    }

    /// Sample `index` of `split`: same arguments, same clip, caption and attributes.
    pub fn sample(&self, split: Split, index: u64) -> ShapesSample {
        let mut rng = self.rng(split, index);
        let attributes = match split {
            Split::Train => {
                let n = if rng.random::<f32>() < self.config.two_object_prob {
                    2
                } else {
                    1
                };
                let objects = (0..n).map(|_| random_train_object(&mut rng)).collect();
                Attributes {
                    objects,
                    background: pick(&mut rng, Background::ALL),
                }
            }
            Split::HeldOut => {
                let (shape, color, motion) = HELD_OUT[rng.random_range(0..HELD_OUT.len())];
                let object = Object {
                    shape,
                    color,
                    size: pick(&mut rng, Size::ALL),
                    motion,
                };
                Attributes {
                    objects: vec![object],
                    background: pick(&mut rng, Background::ALL),
                }
            }
        };
        let caption = caption(&attributes, &mut rng);
        let clip = render(&attributes, &self.config, &mut rng);
        ShapesSample {
            clip,
            caption,
            attributes,
        }
    }

    /// Render a clip of the given attributes (e.g. an eval prompt's) with a seeded placement.
    pub fn render_attributes(&self, attributes: &Attributes, seed: u64) -> Clip {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ self.seed.rotate_left(17));
        render(attributes, &self.config, &mut rng)
    }
}

fn pick<T: Copy, R: Rng>(rng: &mut R, values: &[T]) -> T {
    values[rng.random_range(0..values.len())]
}

fn random_train_object<R: Rng>(rng: &mut R) -> Object {
    loop {
        let o = Object {
            shape: pick(rng, Shape::ALL),
            color: pick(rng, Color::ALL),
            size: pick(rng, Size::ALL),
            motion: pick(rng, Motion::ALL),
        };
        if !is_held_out(o.combo()) {
            return o;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Captions

fn shape_words(s: Shape) -> &'static [&'static str] {
    match s {
        Shape::Circle => &["circle", "ball", "disc", "dot"],
        Shape::Square => &["square", "box", "block"],
        Shape::Triangle => &["triangle", "triangle", "wedge"],
        Shape::Cross => &["cross", "plus sign", "cross"],
    }
}

fn size_words(s: Size) -> &'static [&'static str] {
    match s {
        Size::Small => &["small", "little", "tiny"],
        Size::Large => &["large", "big", "huge"],
    }
}

fn motion_words(m: Motion) -> &'static [&'static str] {
    match m {
        Motion::Left => &[
            "moving left",
            "drifting left",
            "moves to the left",
            "sliding left",
        ],
        Motion::Right => &[
            "moving right",
            "drifting right",
            "moves to the right",
            "sliding right",
        ],
        Motion::Up => &["moving up", "rising", "floating upward", "going up"],
        Motion::Down => &["moving down", "falling", "sinking", "dropping down"],
        Motion::Still => &["standing still", "resting", "not moving", "motionless"],
        Motion::Clockwise => &[
            "orbiting clockwise",
            "circling clockwise",
            "spinning around clockwise",
            "going round clockwise",
        ],
    }
}

fn background_words(b: Background) -> &'static [&'static str] {
    match b {
        Background::Black => &["black"],
        Background::Gray => &["gray", "grey"],
        Background::Navy => &["navy", "dark navy"],
        Background::DarkGreen => &["dark green", "forest green"],
    }
}

fn object_phrase<R: Rng>(o: &Object, rng: &mut R) -> String {
    let shape = pick(rng, shape_words(o.shape));
    let size = pick(rng, size_words(o.size));
    let motion = pick(rng, motion_words(o.motion));
    let color = o.color.word();
    match rng.random_range(0..3) {
        0 => format!("a {size} {color} {shape} {motion}"),
        1 => format!("{color} {shape} {motion}, {size}"),
        _ => format!("{size} {color} {shape}, {motion}"),
    }
}

fn caption<R: Rng>(a: &Attributes, rng: &mut R) -> String {
    let objects: Vec<String> = a.objects.iter().map(|o| object_phrase(o, rng)).collect();
    let body = objects.join("; ");
    let bg = pick(rng, background_words(a.background));
    match rng.random_range(0..3) {
        0 => format!("{body} on {bg}"),
        1 => format!("{body}, {bg} background"),
        _ => format!("{body} over a {bg} backdrop"),
    }
}

/// The canonical caption of one object on a background, as evaluation prompts use it:
/// "a large red circle moving left on black".
pub fn canonical_caption(o: &Object, background: Background) -> String {
    format!(
        "a {} {} {} {} on {}",
        o.size.word(),
        o.color.word(),
        o.shape.word(),
        motion_words(o.motion)[0],
        background.word()
    )
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// Signed distance (pixels, negative inside) from `p` to a shape centred at the origin whose
/// bounding radius is `r`.
fn signed_distance(shape: Shape, px: f32, py: f32, r: f32) -> f32 {
    match shape {
        Shape::Circle => (px * px + py * py).sqrt() - r,
        Shape::Square => box_sd(px, py, r * 0.8, r * 0.8),
        Shape::Cross => box_sd(px, py, r, r * 0.33).min(box_sd(px, py, r * 0.33, r)),
        Shape::Triangle => {
            // Equilateral triangle pointing up (Inigo Quilez's exact SDF), side = r·√3.
            let k = 3f32.sqrt();
            let r = r * 0.95;
            let (mut x, mut y) = (px.abs() - r * k / 2.0, -py + r / 2.0 - r * 0.25);
            if x + k * y > 0.0 {
                let (nx, ny) = ((x - k * y) / 2.0, (-k * x - y) / 2.0);
                x = nx;
                y = ny;
            }
            x -= x.clamp(-r * k, 0.0);
            -(x * x + y * y).sqrt() * y.signum()
        }
    }
}

fn box_sd(px: f32, py: f32, hx: f32, hy: f32) -> f32 {
    let (dx, dy) = (px.abs() - hx, py.abs() - hy);
    let outside = (dx.max(0.0).powi(2) + dy.max(0.0).powi(2)).sqrt();
    outside + dx.max(dy).min(0.0)
}

/// Centre of an object in frame `f` of `frames`, given its start and motion.
fn trajectory(
    o: &Object,
    start: (f32, f32),
    orbit_phase: f32,
    f: usize,
    frames: usize,
    h: f32,
    w: f32,
) -> (f32, f32) {
    let u = if frames > 1 {
        f as f32 / (frames - 1) as f32
    } else {
        0.0
    };
    let travel = 0.45 * w.min(h);
    let (x, y) = start;
    match o.motion {
        Motion::Left => (x - travel * u, y),
        Motion::Right => (x + travel * u, y),
        Motion::Up => (x, y - travel * u),
        Motion::Down => (x, y + travel * u),
        Motion::Still => (x, y),
        Motion::Clockwise => {
            // Rows grow downwards, so an increasing angle turns clockwise on screen.
            let radius = 0.22 * w.min(h);
            let a = orbit_phase + u * std::f32::consts::PI * 1.5;
            (w / 2.0 + radius * a.cos(), h / 2.0 + radius * a.sin())
        }
    }
}

fn render<R: Rng>(a: &Attributes, cfg: &ShapesConfig, rng: &mut R) -> Clip {
    let (t, h, w) = (cfg.frames, cfg.height, cfg.width);
    let (hf, wf) = (h as f32, w as f32);
    let mut data = vec![0f32; 3 * t * h * w];
    let bg = a.background.rgb();
    for c in 0..3 {
        data[c * t * h * w..(c + 1) * t * h * w].fill(bg[c]);
    }
    // Placements first (in object order, so the rng stream is stable), then draw back to front:
    // the first object is drawn last, on top.
    let travel = 0.45 * wf.min(hf);
    let placements: Vec<((f32, f32), f32)> = a
        .objects
        .iter()
        .map(|o| {
            let margin = radius(o.size, hf, wf) + 1.0;
            let span =
                |lo: f32, hi: f32, rng: &mut R| lo + rng.random::<f32>() * (hi - lo).max(0.0);
            let (x0, x1, y0, y1) = match o.motion {
                Motion::Left => (margin + travel, wf - margin, margin, hf - margin),
                Motion::Right => (margin, wf - margin - travel, margin, hf - margin),
                Motion::Up => (margin, wf - margin, margin + travel, hf - margin),
                Motion::Down => (margin, wf - margin, margin, hf - margin - travel),
                _ => (margin, wf - margin, margin, hf - margin),
            };
            let start = (span(x0, x1, rng), span(y0, y1, rng));
            (start, rng.random::<f32>() * std::f32::consts::TAU)
        })
        .collect();
    for (o, &(start, phase)) in a.objects.iter().zip(&placements).rev() {
        let r = radius(o.size, hf, wf);
        let col = o.color.rgb();
        for f in 0..t {
            let (cx, cy) = trajectory(o, start, phase, f, t, hf, wf);
            let (ylo, yhi) = (
                ((cy - r - 2.0).floor().max(0.0)) as usize,
                ((cy + r + 2.0).ceil().min(hf)) as usize,
            );
            let (xlo, xhi) = (
                ((cx - r - 2.0).floor().max(0.0)) as usize,
                ((cx + r + 2.0).ceil().min(wf)) as usize,
            );
            for y in ylo..yhi {
                for x in xlo..xhi {
                    let sd = signed_distance(o.shape, x as f32 + 0.5 - cx, y as f32 + 0.5 - cy, r);
                    let cover = (0.5 - sd).clamp(0.0, 1.0);
                    if cover > 0.0 {
                        for (c, &value) in col.iter().enumerate() {
                            let i = ((c * t + f) * h + y) * w + x;
                            data[i] = data[i] * (1.0 - cover) + value * cover;
                        }
                    }
                }
            }
        }
    }
    for v in &mut data {
        *v = *v * 2.0 - 1.0;
    }
    Clip {
        data,
        frames: t,
        height: h,
        width: w,
    }
}

fn radius(size: Size, h: f32, w: f32) -> f32 {
    let m = h.min(w);
    match size {
        Size::Small => 0.13 * m,
        Size::Large => 0.22 * m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> ShapesSource {
        ShapesSource::new(ShapesConfig::default(), 7).unwrap()
    }

    #[test]
    fn deterministic_per_index_and_different_across_indices() {
        let s = source();
        let a = s.sample(Split::Train, 42);
        let b = s.sample(Split::Train, 42);
        assert_eq!(a.clip.data, b.clip.data);
        assert_eq!(a.caption, b.caption);
        assert_eq!(a.attributes, b.attributes);
        let c = s.sample(Split::Train, 43);
        assert_ne!(a.clip.data, c.clip.data);
        let other_seed = ShapesSource::new(ShapesConfig::default(), 8)
            .unwrap()
            .sample(Split::Train, 42);
        assert_ne!(a.clip.data, other_seed.clip.data);
    }

    #[test]
    fn held_out_split_never_in_training_and_always_in_eval() {
        let s = source();
        for i in 0..3000 {
            let tr = s.sample(Split::Train, i);
            assert!(
                tr.attributes
                    .objects
                    .iter()
                    .all(|o| !is_held_out(o.combo())),
                "train clip {i} holds a held-out object"
            );
            let ev = s.sample(Split::HeldOut, i);
            assert!(is_held_out(ev.attributes.main().combo()));
        }
    }

    #[test]
    fn clips_in_range_and_show_the_object() {
        let s = source();
        for i in 0..50 {
            let sample = s.sample(Split::Train, i);
            let clip = &sample.clip;
            assert_eq!(clip.data.len(), 3 * 8 * 32 * 32);
            assert!(clip.data.iter().all(|v| (-1.0..=1.0).contains(v)));
            // The object changes some pixels away from the background in every frame.
            let bg = sample.attributes.background.rgb();
            for f in 0..8 {
                let differs = (0..32 * 32).filter(|p| {
                    (0..3).any(|c| {
                        (clip.data[(c * 8 + f) * 1024 + p] - (bg[c] * 2.0 - 1.0)).abs() > 0.3
                    })
                });
                assert!(differs.count() > 10, "clip {i} frame {f} shows no object");
            }
        }
    }

    #[test]
    fn motion_moves_the_centre_of_mass_the_right_way() {
        let s = ShapesSource::new(
            ShapesConfig {
                two_object_prob: 0.0,
                ..ShapesConfig::default()
            },
            3,
        )
        .unwrap();
        let mut checked = 0;
        for i in 0..400 {
            let sample = s.sample(Split::Train, i);
            let o = *sample.attributes.main();
            let bg = sample.attributes.background.rgb();
            let centre = |f: usize| {
                let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
                for y in 0..32 {
                    for x in 0..32 {
                        let d: f32 = (0..3)
                            .map(|c| {
                                (sample.clip.data[((c * 8 + f) * 32 + y) * 32 + x]
                                    - (bg[c] * 2.0 - 1.0))
                                    .abs()
                            })
                            .sum();
                        sx += d * x as f32;
                        sy += d * y as f32;
                        n += d;
                    }
                }
                (sx / n, sy / n)
            };
            let ((x0, y0), (x1, y1)) = (centre(0), centre(7));
            match o.motion {
                Motion::Left => assert!(x1 < x0 - 5.0),
                Motion::Right => assert!(x1 > x0 + 5.0),
                Motion::Up => assert!(y1 < y0 - 5.0),
                Motion::Down => assert!(y1 > y0 + 5.0),
                Motion::Still => assert!((x1 - x0).abs() < 0.5 && (y1 - y0).abs() < 0.5),
                Motion::Clockwise => {
                    // The orbit turns 270° over the clip: over frames 0 → 2 (≈ 77°) the cross
                    // product of (start − centre) and (then − centre) is positive for a clockwise
                    // turn when rows grow downwards.
                    let (x2, y2) = centre(2);
                    let cross = (x0 - 16.0) * (y2 - 16.0) - (y0 - 16.0) * (x2 - 16.0);
                    assert!(cross > 0.0, "clip {i}: orbit not clockwise");
                }
            }
            checked += 1;
        }
        assert_eq!(checked, 400);
    }

    #[test]
    fn images_and_other_sizes_work() {
        let s = ShapesSource::new(
            ShapesConfig {
                frames: 1,
                height: 16,
                width: 48,
                two_object_prob: 0.5,
            },
            1,
        )
        .unwrap();
        let x = s.sample(Split::Train, 0);
        assert_eq!(x.clip.data.len(), 3 * 16 * 48);
        assert!(
            ShapesSource::new(
                ShapesConfig {
                    height: 30,
                    ..ShapesConfig::default()
                },
                0
            )
            .is_err()
        );
        assert!(
            ShapesSource::new(
                ShapesConfig {
                    frames: 0,
                    ..ShapesConfig::default()
                },
                0
            )
            .is_err()
        );
    }

    #[test]
    fn captions_name_the_colour_and_vary() {
        let s = source();
        let mut phrasings = std::collections::HashSet::new();
        for i in 0..200 {
            let x = s.sample(Split::Train, i);
            assert!(
                x.caption.contains(x.attributes.main().color.word()),
                "{}",
                x.caption
            );
            phrasings.insert(x.caption.clone());
        }
        assert!(phrasings.len() > 150);
    }
}
