package secret

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const canary = "hunter2-canary-password"

func TestSecretNeverPrints(t *testing.T) {
	s := Secret(canary)
	type wrapper struct {
		Password Secret
		Ptr      *Secret
	}
	w := wrapper{Password: s, Ptr: &s}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.Debug("login", "password", s, "wrapped", w)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("login", "password", s, "ptr", &s)
	js, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%s":   fmt.Sprintf("%s", s),
		"%v":   fmt.Sprintf("%v", s),
		"%+v":  fmt.Sprintf("%+v", w),
		"%#v":  fmt.Sprintf("%#v", w),
		"%q":   fmt.Sprintf("%q", s),
		"%x":   fmt.Sprintf("%x", s),
		"%X":   fmt.Sprintf("%X", s),
		"%d":   fmt.Sprintf("%d", s),
		"json": string(js),
		"slog": logs.String(),
		"err":  fmt.Errorf("dial: %v", s).Error(),
	}
	for name, out := range outputs {
		if strings.Contains(out, canary) || strings.Contains(strings.ToLower(out), fmt.Sprintf("%x", canary)) {
			t.Errorf("%s shows the secret: %s", name, out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s = %q, want it to say %q", name, out, Redacted)
		}
	}
	if got := s.Reveal(); got != canary {
		t.Errorf("Reveal() = %q, want %q", got, canary)
	}
}

func TestSecretDecodesFromJSON(t *testing.T) {
	var v struct{ Password Secret }
	if err := json.Unmarshal([]byte(`{"Password":"p\u00e4ss"}`), &v); err != nil {
		t.Fatal(err)
	}
	if v.Password.Reveal() != "päss" {
		t.Errorf("decoded %q", v.Password.Reveal())
	}
}

func newTestKey(t *testing.T) *Key {
	t.Helper()
	text, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKey(text)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestBoxSealOpen(t *testing.T) {
	k1, k2 := newTestKey(t), newTestKey(t)
	if k1.ID() == k2.ID() {
		t.Fatalf("two random keys share id %s", k1.ID())
	}
	old := NewBox(k1)
	aad := AAD("smtp_accounts", "password", 7)
	sealed, err := old.Seal(canary, aad)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, canary) {
		t.Fatalf("sealed value shows the plaintext")
	}
	if id, _ := KeyID(sealed); id != k1.ID() {
		t.Errorf("KeyID() = %q, want %q", id, k1.ID())
	}
	again, _ := old.Seal(canary, aad)
	if again == sealed {
		t.Errorf("two seals of one value are equal: the nonce is not random")
	}
	got, err := old.Open(sealed, aad)
	if err != nil || got.Reveal() != canary {
		t.Fatalf("Open() = %q, %v", got.Reveal(), err)
	}

	cases := []struct {
		name   string
		box    *Box
		sealed string
		aad    string
		want   error
	}{
		{"other row", old, sealed, AAD("smtp_accounts", "password", 8), ErrOpen},
		{"other column", old, sealed, AAD("smtp_accounts", "login", 7), ErrOpen},
		{"other table", old, sealed, AAD("senders", "password", 7), ErrOpen},
		{"unknown key", NewBox(k2), sealed, aad, ErrUnknownKey},
		{"tampered", old, sealed[:len(sealed)-2] + "AA", aad, ErrOpen},
		{"truncated", old, sealed[:12], aad, ErrMalformed},
		{"plaintext", old, canary, aad, ErrMalformed},
		{"empty", old, "", aad, ErrMalformed},
	}
	for _, c := range cases {
		if _, err := c.box.Open(c.sealed, c.aad); !errors.Is(err, c.want) {
			t.Errorf("%s: Open() error = %v, want %v", c.name, err, c.want)
		}
	}

	rotated := NewBox(k2, k1)
	if got, err := rotated.Open(sealed, aad); err != nil || got.Reveal() != canary {
		t.Errorf("box with the old key among its keys: Open() = %v", err)
	}
	resealed, _ := rotated.Seal(canary, aad)
	if id, _ := KeyID(resealed); id != k2.ID() {
		t.Errorf("rotated box seals with %s, want the new key %s", id, k2.ID())
	}
	if _, err := old.Open(resealed, aad); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("old box opens a value sealed with the new key: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	for _, bad := range []string{"", "not base64 !!", "c2hvcnQ=", strings.Repeat("A", 60)} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted a bad key", bad)
		}
	}
	raw := bytes.Repeat([]byte{7}, KeySize)
	a, _ := NewKey(raw)
	for _, text := range []string{
		"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
		"  BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc\n",
	} {
		k, err := ParseKey(text)
		if err != nil || k.ID() != a.ID() {
			t.Errorf("ParseKey(%q) = %v, %v; want id %s", text, k, err, a.ID())
		}
	}
}

func TestEnsureKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "secret.key")
	k, created, err := EnsureKeyFile(path)
	if err != nil || !created {
		t.Fatalf("EnsureKeyFile() created=%v err=%v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", st.Mode().Perm())
	}
	k2, created, err := EnsureKeyFile(path)
	if err != nil || created || k2.ID() != k.ID() {
		t.Errorf("second EnsureKeyFile() created=%v err=%v id %s want %s", created, err, k2.ID(), k.ID())
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := EnsureKeyFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("a garbage key file: error %v should name %s", err, path)
	}
}
