//go:build !linux

package testpeer

import (
	"errors"
	"syscall"
	"time"
)

func dovecotSupported() error { return errors.New("the Dovecot peer runs on Linux only") }

func dovecotSysProcAttr() *syscall.SysProcAttr { return nil }

func dovecotKillGroup(int) {}

func dovecotWaitGroup(int, time.Time) error { return nil }

func dovecotWaitPIDs([]int, time.Time) error { return nil }
