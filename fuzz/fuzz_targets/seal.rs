//! The sealed login state (`identity::seal`): a sealed value opens to
//! itself before it expires, for its purpose only; nothing else opens
//! (arbitrary text, or any single-byte modification of a sealed value).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rack_gateway::identity::seal::{Purpose, SealError, Sealer};

/// `Sealer::open` refuses sealed text longer than this.
const OPEN_CAP: usize = 8192;

fn sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(|| Sealer::new(b"fuzz sealing secret"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        for purpose in [Purpose::LoginState, Purpose::LoginCode] {
            assert!(
                sealer().open::<String>(purpose, &text, 0).is_err(),
                "forged seal opened"
            );
        }
        return;
    }
    if rest.len() < 2 {
        return;
    }
    let (pos, byte, value) = (
        rest[0],
        rest[1],
        String::from_utf8_lossy(&rest[2..]).into_owned(),
    );
    let exp = 1_800_000_000;
    let sealed = sealer().seal(Purpose::LoginState, &value, exp);
    if sealed.len() > OPEN_CAP {
        // Found by this target: `seal` does not cap what `open` refuses. A
        // deliberate DoS guard (login states are far smaller), so what is
        // checked is that the oversized value is refused, not opened.
        assert_eq!(
            sealer().open::<String>(Purpose::LoginState, &sealed, exp),
            Err(SealError::Invalid)
        );
        return;
    }
    assert_eq!(
        sealer()
            .open::<String>(Purpose::LoginState, &sealed, exp)
            .as_ref(),
        Ok(&value)
    );
    assert_eq!(
        sealer().open::<String>(Purpose::LoginState, &sealed, exp + 1),
        Err(SealError::Expired)
    );
    assert_eq!(
        sealer().open::<String>(Purpose::LoginCode, &sealed, exp),
        Err(SealError::Invalid)
    );
    let mut bytes = sealed.into_bytes();
    let i = usize::from(pos) * bytes.len() / 256;
    bytes[i] = if bytes[i] == byte { byte ^ 1 } else { byte };
    let modified = String::from_utf8_lossy(&bytes);
    assert!(
        sealer()
            .open::<String>(Purpose::LoginState, &modified, exp)
            .is_err(),
        "modified seal {modified:?} opened"
    );
});
