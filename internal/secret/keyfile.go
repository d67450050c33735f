package secret

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadKeyFile reads a base64 key from path.
func LoadKeyFile(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secret key file %s: %w", path, err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("secret key file %s: %w", path, err)
	}
	return k, nil
}

// EnsureKeyFile loads the key at path, first creating it with a new random
// key (mode 0600, its folder 0700) when the file does not exist. created
// reports whether a new key was written.
func EnsureKeyFile(path string) (k *Key, created bool, err error) {
	k, err = LoadKeyFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	if err := WriteKeyFile(path); err != nil {
		return nil, false, err
	}
	k, err = LoadKeyFile(path)
	return k, err == nil, err
}

// WriteKeyFile writes a new random key to path, which must not exist yet.
func WriteKeyFile(path string) error {
	text, err := GenerateKey()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create secret key folder: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create secret key file: %w", err)
	}
	if _, err := f.WriteString(text + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("write secret key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync secret key file %s: %w", path, err)
	}
	return f.Close()
}
