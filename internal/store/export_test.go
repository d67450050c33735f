package store

import "context"

// MigrateUpTo applies the migrations up to version v only, so that a test
// can put rows in an older schema and watch a later migration move them.
func (db *DB) MigrateUpTo(ctx context.Context, v int) ([]int, error) {
	var ms []Migration
	for _, m := range sortedMigrations() {
		if m.Version <= v {
			ms = append(ms, m)
		}
	}
	return db.migrate(ctx, ms)
}
