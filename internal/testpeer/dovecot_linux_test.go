//go:build linux

package testpeer

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// TestDovecotCleanupLeavesNothing runs a Dovecot in a subtest and checks,
// after the subtest's Cleanup, that no process of its group is alive and
// its ports are closed.
func TestDovecotCleanupLeavesNothing(t *testing.T) {
	t.Parallel()
	var (
		pgid  int
		addrs []string
	)
	t.Run("run", func(t *testing.T) {
		d := StartDovecot(t, nil)
		d.AddUser(t, "kim@example.test", "kim-pw")
		d.Client(t, "kim@example.test", "kim-pw")
		pgid = d.cmd.Process.Pid
		addrs = []string{d.PlainAddr(), d.TLSAddr()}
		members, err := dovecotGroupMembers(pgid)
		if err != nil {
			t.Fatalf("process group: %v", err)
		}
		if len(members) < 3 {
			t.Errorf("process group %d has %d live processes, want master, log, config, imap-login, imap…", pgid, len(members))
		}
	})
	if pgid == 0 {
		t.Skip("dovecot did not run")
	}
	members, err := dovecotGroupMembers(pgid)
	if err != nil {
		t.Fatalf("process group: %v", err)
	}
	if len(members) != 0 {
		t.Errorf("after Cleanup, process group %d still has %v", pgid, members)
	}
	if err := syscall.Kill(pgid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("after Cleanup, kill(%d, 0) = %v, want ESRCH: the master is still there", pgid, err)
	}
	for _, addr := range addrs {
		if conn, err := net.DialTimeout("tcp", addr, dovecotTestTimeout); err == nil {
			conn.Close()
			t.Errorf("after Cleanup, %s still accepts connections", addr)
		}
	}
}
