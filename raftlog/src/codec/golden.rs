//! The golden examples of `docs/FORMAT.md` ("raftlog codec" → "Examples"), checked byte for byte
//! against the encoder and decoded back, so the document cannot drift from the code. The hex is
//! parsed out of the document itself, from the code block after each `<!-- golden: NAME -->`.

use bytes::Bytes;

use crate::types::{Entry, HardState, Message, MessageType};

const FORMAT_MD: &str = include_str!("../../../docs/FORMAT.md");

/// The bytes of the golden block `name`: the hex before each line's `|`.
fn golden(name: &str) -> Vec<u8> {
    let marker = format!("<!-- golden: {name} -->");
    let start = FORMAT_MD
        .find(&marker)
        .unwrap_or_else(|| panic!("FORMAT.md has no {marker}"));
    let block = FORMAT_MD[start..]
        .split("```")
        .nth(1)
        .expect("a code block follows the marker");
    let mut lines = block.lines();
    assert_eq!(
        lines.next(),
        Some("text"),
        "golden blocks are ```text blocks"
    );
    lines
        .flat_map(|line| line.split('|').next().unwrap_or("").split_whitespace())
        .map(|hex| {
            u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad hex {hex:?} in {name}"))
        })
        .collect()
}

fn sample_entry() -> Entry {
    Entry::new(3, 300, &b"abc"[..])
}

#[test]
fn entry_matches_format_md() {
    let doc = golden("entry");
    assert_eq!(sample_entry().encode_to_vec(), doc);
    assert_eq!(sample_entry().encoded_len(), doc.len());
    assert_eq!(Entry::decode(&doc), Ok(sample_entry()));
}

#[test]
fn hard_state_matches_format_md() {
    let hs = HardState {
        term: 3,
        vote: 2,
        commit: 300,
    };
    let doc = golden("hard_state");
    assert_eq!(hs.encode_to_vec(), doc);
    assert_eq!(HardState::decode(&doc), Ok(hs));
}

#[test]
fn message_matches_format_md() {
    let msg = Message {
        msg_type: MessageType::MsgAppend,
        to: 2,
        from: 1,
        term: 3,
        log_term: 3,
        index: 299,
        commit: 299,
        priority: -1,
        entries: vec![sample_entry()],
        ..Message::default()
    };
    let doc = golden("message");
    assert_eq!(msg.encode_to_vec(), doc);
    assert_eq!(msg.encoded_len(), doc.len());
    assert_eq!(Message::decode_bytes(&Bytes::from(doc)), Ok(msg));
}
