//! Classifies arbitrary bytes as a body; an internal body must re-encode to the same
//! bytes and decode to itself. Attachment plaintexts likewise.
#![no_main]

use cmtp_proto::body::{AttachmentPlain, Body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Body::decode(data) {
        Body::Internal(ib) => {
            let again = ib.to_bytes().expect("a decoded body re-encodes");
            assert_eq!(again, data);
            assert_eq!(Body::decode(&again), Body::Internal(ib));
        }
        Body::Legacy(text) => assert_eq!(text, String::from_utf8_lossy(data)),
    }
    if let Ok(a) = AttachmentPlain::decode(data) {
        assert_eq!(a.to_bytes().expect("re-encodes"), data);
    }
});
