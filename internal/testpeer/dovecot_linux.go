//go:build linux

package testpeer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func dovecotSupported() error { return nil }

// dovecotSysProcAttr puts Dovecot in its own process group, so that stop
// reaches every process it forked, and kills it should the test binary die
// without running Cleanup (a -timeout panic).
func dovecotSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func dovecotKillGroup(pgid int) { _ = syscall.Kill(-pgid, syscall.SIGKILL) }

// dovecotWaitGroup waits until no live process is left in the group: the
// master's children, re-parented when it died, are not ours to wait for.
func dovecotWaitGroup(pgid int, deadline time.Time) error {
	pids, err := dovecotGroupMembers(pgid)
	if err != nil || len(pids) == 0 {
		return err
	}
	dovecotKillGroup(pgid) // anything forked just before the first kill
	if err := dovecotWaitPIDs(pids, deadline); err != nil {
		return fmt.Errorf("process group %d: %w", pgid, err)
	}
	return nil
}

// dovecotGroupMembers lists the live (not zombie) processes in group pgid.
func dovecotGroupMembers(pgid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if pgrp, err := strconv.Atoi(f[2]); err == nil && pgrp == pgid {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// dovecotWaitPIDs waits, without polling, until every process in pids has
// exited: a pidfd becomes readable when its process exits.
func dovecotWaitPIDs(pids []int, deadline time.Time) error {
	var fds []unix.PollFd
	defer func() {
		for _, fd := range fds {
			_ = unix.Close(int(fd.Fd))
		}
	}()
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue // already gone
		}
		if err != nil {
			return fmt.Errorf("pidfd_open %d: %w", pid, err)
		}
		fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	for len(fds) > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("%d process(es) still running", len(fds))
		}
		n, err := unix.Poll(fds, int(left/time.Millisecond)+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfds: %w", err)
		}
		if n == 0 {
			continue
		}
		live := fds[:0]
		for _, fd := range fds {
			if fd.Revents != 0 {
				_ = unix.Close(int(fd.Fd))
				continue
			}
			fd.Revents = 0
			live = append(live, fd)
		}
		fds = live
	}
	return nil
}
