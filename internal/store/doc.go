// Package store opens mailsync's database and owns its schema: one code path
// through gorm for the embedded SQLite default and for PostgreSQL.
//
// Invariants:
//   - The schema changes only through the numbered migrations in
//     migrations.go, applied in order inside one transaction and recorded in
//     schema_migrations. gorm's AutoMigrate is never used: it neither drops
//     nor renames, and it would let the two dialects drift apart.
//   - Applying migrations is safe when several instances start at the same
//     moment: on PostgreSQL the transaction first takes an advisory lock; on
//     SQLite every write transaction takes the database lock up front
//     (_txlock=immediate), so the second instance waits and then finds
//     nothing left to do.
//   - SQLite runs in WAL mode with a busy timeout and foreign keys on.
//   - Every stored credential is sealed by secret.Box and listed in
//     SecretColumns, which is what RotateKey walks; the meta row
//     "secret_check" proves at start-up that the configured key is the one
//     the database was sealed with.
package store
