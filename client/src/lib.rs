//! The thin Basalt client SDK: region routing cache, leader hints, retries. Not built yet: see the client issue.
