package testpeer

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// RequireEnv is the environment variable listing the peers that must be
// present: a comma-separated list such as "postgres,dovecot". CI sets it so
// that a suite which would skip for a missing peer fails instead.
const RequireEnv = "MAILSYNC_TEST_REQUIRE"

// Required reports whether MAILSYNC_TEST_REQUIRE lists peer.
func Required(peer string) bool {
	return slices.Contains(strings.Split(os.Getenv(RequireEnv), ","), peer)
}

// Missing skips the test because peer is not available, explaining why; when
// MAILSYNC_TEST_REQUIRE lists the peer the test fails instead.
func Missing(t testing.TB, peer, why string) {
	t.Helper()
	if Required(peer) {
		t.Fatalf("%s is required by %s but missing: %s", peer, RequireEnv, why)
	}
	t.Skipf("skipping: %s is missing: %s", peer, why)
}
