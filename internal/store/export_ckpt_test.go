package store

// CheckpointRan receives after each background WAL checkpoint (SQLite).
func (db *DB) CheckpointRan() <-chan struct{} { return db.ckpt.ran }
