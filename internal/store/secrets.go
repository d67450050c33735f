package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/mailsync/mailsync/internal/secret"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

const (
	secretCheckKey   = "secret_check"
	secretCheckValue = "mailsync secret check"
	secretCheckAAD   = "meta.value#secret_check"
)

// WrongKeyError means the configured key is not the one that sealed this
// database's secrets.
type WrongKeyError struct {
	Source  string // where the key came from, e.g. "MAILSYNC_SECRET_KEY_FILE=./data/secret.key"
	Have    string // id of the configured key
	Want    string // id of the key the database was sealed with
	Message string
}

func (e *WrongKeyError) Error() string {
	return fmt.Sprintf("secret key from %s (key id %s) is not the key this database was sealed with (key id %s): %s",
		e.Source, e.Have, e.Want, e.Message)
}

// CheckKey proves that box opens this database's secrets: the first time it
// stores a sealed check value, later it opens it. source names where the key
// came from, for the error. Instances starting at once agree on one check
// value: the first insert wins and every instance then opens that one.
func (db *DB) CheckKey(ctx context.Context, box *secret.Box, source string) error {
	g := db.WithContext(ctx)
	sealed, err := box.Seal(secretCheckValue, secretCheckAAD)
	if err != nil {
		return err
	}
	if err := g.Clauses(clause.OnConflict{DoNothing: true}).Table("meta").
		Create(map[string]any{"key": secretCheckKey, "value": sealed}).Error; err != nil {
		return fmt.Errorf("store secret check: %w", err)
	}
	var rows []string
	if err := g.Raw("SELECT value FROM meta WHERE key = ?", secretCheckKey).Scan(&rows).Error; err != nil {
		return fmt.Errorf("read secret check: %w", err)
	}
	if len(rows) == 0 {
		return errors.New("secret check row vanished")
	}
	want, _ := secret.KeyID(rows[0])
	got, err := box.Open(rows[0], secretCheckAAD)
	if err != nil || got.Reveal() != secretCheckValue {
		msg := "start with the key the database was created with, or restore it"
		if !errors.Is(err, secret.ErrUnknownKey) {
			msg = "the stored check value does not open"
		}
		return &WrongKeyError{Source: source, Have: box.PrimaryID(), Want: want, Message: msg}
	}
	return nil
}

// RotateKey re-seals every value in cols (normally SecretColumns()) and the
// key check with next, opening them with current, all in one transaction:
// either every secret moves to the new key or none does. It returns how many
// values it re-sealed.
func (db *DB) RotateKey(ctx context.Context, current, next *secret.Box, cols []SecretColumn) (int, error) {
	n := 0
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for _, c := range cols {
			type row struct {
				ID    int64
				Value string
			}
			var rows []row
			q := fmt.Sprintf("SELECT id, %s AS value FROM %s WHERE %s IS NOT NULL AND %s <> ''",
				quote(c.Column), quote(c.Table), quote(c.Column), quote(c.Column))
			if err := tx.Raw(q).Scan(&rows).Error; err != nil {
				return fmt.Errorf("read %s.%s: %w", c.Table, c.Column, err)
			}
			for _, r := range rows {
				aad := secret.AAD(c.Table, c.Column, r.ID)
				plain, err := current.Open(r.Value, aad)
				if err != nil {
					return fmt.Errorf("open %s: %w", aad, err)
				}
				sealed, err := next.SealSecret(plain, aad)
				if err != nil {
					return err
				}
				if err := tx.Table(c.Table).Where("id = ?", r.ID).Update(c.Column, sealed).Error; err != nil {
					return fmt.Errorf("write %s: %w", aad, err)
				}
				n++
			}
		}
		sealed, err := next.Seal(secretCheckValue, secretCheckAAD)
		if err != nil {
			return err
		}
		return tx.Clauses(clause.OnConflict{
			Columns:   []clause.Column{{Name: "key"}},
			DoUpdates: clause.Assignments(map[string]any{"value": sealed}),
		}).Table("meta").Create(map[string]any{"key": secretCheckKey, "value": sealed}).Error
	})
	if err != nil {
		return 0, fmt.Errorf("rotate key: %w", err)
	}
	return n, nil
}

// quote quotes an identifier the same way on both dialects.
func quote(ident string) string { return `"` + ident + `"` }

// SealedWith returns the id of the key this database's secrets are sealed
// with, or "" for a database that has none yet.
func (db *DB) SealedWith(ctx context.Context) (string, error) {
	var rows []string
	if err := db.WithContext(ctx).Raw("SELECT value FROM meta WHERE key = ?", secretCheckKey).Scan(&rows).Error; err != nil {
		return "", fmt.Errorf("read secret check: %w", err)
	}
	if len(rows) == 0 {
		return "", nil
	}
	id, err := secret.KeyID(rows[0])
	if err != nil {
		return "", fmt.Errorf("secret check: %w", err)
	}
	return id, nil
}
