// Package imapsync (folder sync) mirrors the chosen IMAP folders of every
// connected mailbox into the database: initial and incremental sync, IDLE,
// and the leases that let several instances share the work. It is named
// imapsync so that no importer has to alias around the standard library's
// sync. It imports mailbox (models, settings, the dialer) and store.
//
// # Shape
//
// New builds an Engine; Run is its worker loop (serve runs it with the other
// workers). Every LeaseTTL/3 the loop heartbeats the instance
// (sync_instances), renews its leases (sync_leases), stops the workers of
// leases it lost, gives back what exceeds its share — the eligible
// mailboxes divided by the live instances, within MaxMailboxesPerInstance —
// and takes free mailboxes up to it. Each held mailbox has one worker
// goroutine that owns its one IMAP connection: a full pass over the selected
// folders (INBOX last), then IDLE on INBOX; an EXISTS, EXPUNGE or FETCH from
// the server (the unilateral data handler) wakes a pass of INBOX, the poll
// timer (PollInterval) or a request (SyncNow, a mailbox change) a full
// pass. IDLE is ended and started again every IdleRestart (25 min, under
// RFC 2177's 29). A failure reconnects with exponential backoff and jitter;
// a refused login marks the mailbox auth_failed and ends its worker until
// the settings change (mailbox.Service.Update clears the flag and calls
// OnChange).
//
// # One folder sync (syncFolder)
//
// EXAMINE with CONDSTORE (RFC 7162) gives UIDVALIDITY, UIDNEXT, EXISTS and
// HIGHESTMODSEQ. A new UIDVALIDITY deletes the folder's rows (RFC 3501
// 2.3.1.1). When UIDNEXT, EXISTS and HIGHESTMODSEQ equal the values stored at
// the end of the last complete run, nothing changed: nothing is fetched or
// written. Otherwise UID SEARCH ALL (ESEARCH when offered) is diffed with
// the stored UIDs — go-imap v2 beta cannot parse VANISHED, so expunges are
// found this way — flags come from FETCH (FLAGS) (CHANGEDSINCE modseq), or a
// sweep in chunks without CONDSTORE, and only rows whose flags differ are
// written; missing messages are fetched newest first in UID FETCH batches.
//
// Bodies are never buffered without a bound: each literal is read whole up
// to its announced size only when it is at most MaxMessageBytes (larger ones
// are parsed as they stream and stored without their bytes, raw_omitted),
// and the bytes in flight between the connection and the parse/compress
// workers are capped (24 MiB). go-imap's Collect is never used for bodies,
// and no other IMAP command is sent inside a FETCH loop (only database
// work happens there).
//
// # Storage
//
// The raw RFC 822 message is stored in the messages.raw column (BYTEA on
// PostgreSQL, BLOB on SQLite) in the row's own transaction, encoded as
// messages.raw_codec says: when base64 runs (attachments) are an eighth of
// the message or more, a b64s2 container (rawcodec_b64.go) that keeps each
// run as the bytes it encodes, rebuilt byte for byte on reading (a quarter
// less to write), with the rest in one S2 block; else one S2 block when S2
// shrinks the message by an eighth or more (text and HTML, to about a
// third), else the bytes as they came; rows written before migration 7 are
// gzip. On PostgreSQL the column's storage is EXTERNAL (no pglz
// attempt on bytes that do not compress); new SQLite databases have 16 KiB
// pages. gzip at level 1 cost more CPU per byte than the database's own
// write of it, for a quarter saved on attachments.
//
// A blob store on disk (files beside the database, the row keeping a hash)
// was measured and not taken: written so that a crash never leaves a row
// without its file (an fsync, or one syncfs per batch, before the commit),
// it cost as much CPU on the benchmark machine as SQLite's write of the
// same bytes through its WAL; without the fsync it is not crash-safe; and
// instances sharing a PostgreSQL database on several machines would all
// need to reach it. docs/benchmarks.md ("IMAP sync") has the figures. The
// API serves the raw message from the row, decoding it by its codec.
//
// # Invariants
//
//   - (folder, uidvalidity, uid) is unique in the database
//     (messages_folder_uid), and inserts are ON CONFLICT DO NOTHING.
//   - A folder's sync state (UIDNEXT, HIGHESTMODSEQ) advances only in the
//     transaction that commits the last rows of a run in which no message
//     failed, so a restart redoes at most the uncommitted batch (BatchSize
//     rows plus what was in flight); progress (total, synced) is committed
//     with every batch.
//   - A sync of an unchanged folder fetches no body and writes no message
//     or folder row (Engine.Stats counts both; the mailbox's status row
//     records the time of the check).
//   - One worker holds a mailbox at a time: a lease row renewed every
//     LeaseTTL/3; a worker whose lease cannot be renewed stops before it
//     could run out, and an instance that dies loses its mailboxes once
//     their leases expire. Instances' clocks must agree within a fraction
//     of LeaseTTL.
//   - Every IMAP command runs under a deadline (CommandTimeout without
//     progress) that closes the connection: go-imap v2 has no context and
//     no read timeout between responses; TCP keep-alive is on (netguard).
//   - A message that fails to parse MaxParseFailures times is quarantined
//     (sync_quarantine): logged, counted, and skipped afterwards.
package imapsync
