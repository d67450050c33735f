package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of a key: AES-256.
const KeySize = 32

const version = "v1"

var (
	// ErrUnknownKey means the ciphertext names a key the Box does not hold.
	ErrUnknownKey = errors.New("sealed with a key this service does not have")
	// ErrOpen means the ciphertext did not authenticate: a wrong key, a
	// tampered value, or a value moved from another row or field.
	ErrOpen = errors.New("secret does not open with its key and row")
	// ErrMalformed means the stored value is not a sealed secret.
	ErrMalformed = errors.New("malformed sealed secret")
)

// Key is an AES-256 key with its id. The id is derived from the key, so the
// same key always has the same id and no id needs configuring.
type Key struct {
	id   string
	aead cipher.AEAD
}

// NewKey makes a Key from 32 raw bytes.
func NewKey(raw []byte) (*Key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("secret key is %d bytes, want %d", len(raw), KeySize)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	sum := sha256.Sum256(append([]byte("mailsync key id\x00"), raw...))
	return &Key{id: hex.EncodeToString(sum[:4]), aead: aead}, nil
}

// ParseKey decodes a base64 key (standard or URL alphabet, padded or not),
// as MAILSYNC_SECRET_KEY and key files hold it. Surrounding space is ignored.
func ParseKey(text string) (*Key, error) {
	text = strings.TrimSpace(text)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err := enc.DecodeString(text); err == nil {
			return NewKey(raw)
		}
	}
	return nil, errors.New("secret key is not base64")
}

// GenerateKey returns a new random key, base64-encoded.
func GenerateKey() (string, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate secret key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(raw), nil
}

// ID returns the key's id, as stored with every ciphertext it seals.
func (k *Key) ID() string { return k.id }

// Box seals with its primary key and opens with any of its keys.
type Box struct {
	primary *Key
	keys    map[string]*Key
}

// NewBox returns a Box that seals with primary and also opens values sealed
// with any of older.
func NewBox(primary *Key, older ...*Key) *Box {
	b := &Box{primary: primary, keys: map[string]*Key{primary.id: primary}}
	for _, k := range older {
		b.keys[k.id] = k
	}
	return b
}

// PrimaryID returns the id of the key that seals.
func (b *Box) PrimaryID() string { return b.primary.id }

// AAD names the place a secret is stored: table, column and row. Sealing and
// opening with the same AAD is what binds a ciphertext to its row.
func AAD(table, column string, row int64) string {
	return fmt.Sprintf("%s.%s#%d", table, column, row)
}

// Seal encrypts plaintext for the place named by aad.
func (b *Box) Seal(plaintext, aad string) (string, error) {
	k := b.primary
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: nonce: %w", err)
	}
	out := k.aead.Seal(nonce, nonce, []byte(plaintext), []byte(aad))
	return version + "." + k.id + "." + base64.RawURLEncoding.EncodeToString(out), nil
}

// SealSecret is Seal for a Secret.
func (b *Box) SealSecret(s Secret, aad string) (string, error) { return b.Seal(s.Reveal(), aad) }

// Open decrypts a value sealed for the place named by aad.
func (b *Box) Open(sealed, aad string) (Secret, error) {
	id, err := KeyID(sealed)
	if err != nil {
		return "", err
	}
	k, ok := b.keys[id]
	if !ok {
		return "", fmt.Errorf("key %s: %w", id, ErrUnknownKey)
	}
	raw, err := base64.RawURLEncoding.DecodeString(sealed[len(version)+1+len(id)+1:])
	if err != nil || len(raw) < k.aead.NonceSize()+k.aead.Overhead() {
		return "", ErrMalformed
	}
	n := k.aead.NonceSize()
	plain, err := k.aead.Open(nil, raw[:n], raw[n:], []byte(aad))
	if err != nil {
		return "", fmt.Errorf("%s: %w", aad, ErrOpen)
	}
	return Secret(plain), nil
}

// KeyID returns the id of the key that sealed a value.
func KeyID(sealed string) (string, error) {
	v, rest, ok := strings.Cut(sealed, ".")
	if !ok || v != version {
		return "", ErrMalformed
	}
	id, _, ok := strings.Cut(rest, ".")
	if !ok || id == "" {
		return "", ErrMalformed
	}
	return id, nil
}
