//go:build killpoints

package main

// Kill points, for the crash tests only: a binary built with -tags killpoints
// counts every step of the state store (store.Options.Hook: each fsync,
// rename, directory fsync and removal) and every TPM command
// (tpm.Options.BeforeCommand), in the order they happen, and stops itself
// with SIGKILL at the one a test chose. SIGKILL runs no deferred function and
// flushes nothing, so what the state directory and the TPM hold afterwards is
// what a power cut at that instant would leave as far as the process goes.
//
// The environment says what to do; it is read once at start, before the
// configuration, and removed so that the configuration's strict DPSAGENT_*
// overrides do not see it:
//
//	DPSAGENT_KILL_AT=N       kill at the Nth kill point (1-based); unset or 0: never
//	DPSAGENT_KILL_LOG=FILE   before killing, append "N NAME" to FILE
//	DPSAGENT_KILL_TRACE=FILE append "N NAME" for every kill point counted
//	DPSAGENT_KILL_FROM=NAME  count from the first kill point named NAME
//	                         (tpm:Create: the first key creation, i.e. the
//	                         renewal, for an agent that starts provisioned)
//
// Names are "store:" and the store's step ("store:rename:state.json"), or
// "tpm:" and the command ("tpm:Sign").

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
)

// killSwitch is process-wide on purpose: the kill ends the whole process, and
// one count must order the store's steps and the TPM's commands together.
// It exists only in killpoints builds, which run one agent per process.
type killSwitch struct {
	at    int
	from  string
	log   string
	trace string

	mu       sync.Mutex
	n        int
	counting bool
}

var killPoints = killSwitchFromEnv()

func killSwitchFromEnv() *killSwitch {
	k := &killSwitch{
		from:  os.Getenv("DPSAGENT_KILL_FROM"),
		log:   os.Getenv("DPSAGENT_KILL_LOG"),
		trace: os.Getenv("DPSAGENT_KILL_TRACE"),
	}
	if s := os.Getenv("DPSAGENT_KILL_AT"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "dpsagent: DPSAGENT_KILL_AT=%q: want a kill point number (1 is the first)\n", s)
			os.Exit(exitConfig)
		}
		k.at = n
	}
	k.counting = k.from == ""
	for _, name := range []string{"DPSAGENT_KILL_AT", "DPSAGENT_KILL_LOG", "DPSAGENT_KILL_TRACE", "DPSAGENT_KILL_FROM"} {
		_ = os.Unsetenv(name)
	}
	if k.at == 0 && k.trace == "" {
		return nil
	}
	return k
}

func killPointStoreHook() func(step string) error {
	if killPoints == nil {
		return nil
	}
	return func(step string) error {
		killPoints.hit("store:" + step)
		return nil
	}
}

func killPointTPMHook() func(name string) {
	if killPoints == nil {
		return nil
	}
	return func(name string) { killPoints.hit("tpm:" + name) }
}

// hit counts a kill point and kills the process if it is the chosen one. The
// lock is held through the kill, so no later kill point runs meanwhile.
func (k *killSwitch) hit(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.counting {
		if name != k.from {
			return
		}
		k.counting = true
	}
	k.n++
	line := fmt.Sprintf("%d %s\n", k.n, name)
	if k.trace != "" {
		appendKillLine(k.trace, line)
	}
	if k.n != k.at {
		return
	}
	if k.log != "" {
		appendKillLine(k.log, line)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is already pending: nothing of this process runs on
}

// appendKillLine appends line to path; a failure is reported but does not
// stop the kill (the test then sees no name and fails on that).
func appendKillLine(path, line string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err == nil {
		_, err = f.WriteString(line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "dpsagent: kill point log %s: %v\n", path, err)
	}
}
