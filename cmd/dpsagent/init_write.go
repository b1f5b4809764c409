package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// configMode lets root write and the service's group read: the file names
// secrets without holding them.
const configMode fs.FileMode = 0o640

// writeInitConfig writes atomically, replacing a file only when told to,
// checks that the service will load what was written, and says what to run next.
func (c *cli) writeInitConfig(cfg *Config, path string, replace bool) error {
	def, err := defaultConfig()
	if err != nil {
		return withCode(exitFailure, err)
	}
	data, err := renderConfig(cfg, &def)
	if err != nil {
		return withCode(exitFailure, err)
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return withCode(exitFailure, fmt.Errorf("create %s: %w%s", dir, err, asRootHint(err)))
		}
	}
	if err := writeFile(path, data, configMode, replace); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return withCode(exitFailure, fmt.Errorf("%s appeared while init ran: nothing written; run init again to replace it", path))
		}
		return withCode(exitFailure, fmt.Errorf("write %s: %w%s", path, err, asRootHint(err)))
	}
	if _, err := loadConfig(path, nil); err != nil {
		return withCode(exitFailure, fmt.Errorf("wrote %s, but it does not load (a bug in init: please report it): %w", path, err))
	}
	c.printNextSteps(path)
	return nil
}

func asRootHint(err error) string {
	if errors.Is(err, fs.ErrPermission) {
		return ": run it as root (sudo dpsagent init …)"
	}
	return ""
}

func (c *cli) printNextSteps(path string) {
	w := c.stdout
	fmt.Fprintf(w, "\nWrote %s (mode %04o).\n", path, configMode)
	if hint := groupHint(path); hint != "" {
		fmt.Fprintln(w, hint)
	}
	config := ""
	if path != DefaultConfigFile {
		config = " --config " + path
	}
	fmt.Fprintf(w, "\nNext:\n")
	fmt.Fprintf(w, "  dpsagent check%s\n      tests the configuration, the TPM, the clock and the network, with a fix for each problem\n", config)
	if path != DefaultConfigFile {
		fmt.Fprintf(w, "  the service reads %s: copy this file there (mode %04o) before starting it\n", DefaultConfigFile, configMode)
	}
	fmt.Fprintf(w, "  systemctl enable --now dpsagent\n      starts the service now and at every boot\n")
	fmt.Fprintf(w, "or, to watch it provision in the foreground first:\n  dpsagent provision%s\n", config)
}

// groupHint asks for the group the packaged service reads the file through,
// when that group exists here and the file is not in it.
func groupHint(path string) string {
	g, err := user.LookupGroup("dpsagent")
	if err != nil {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || strconv.FormatUint(uint64(st.Gid), 10) == g.Gid {
		return ""
	}
	return fmt.Sprintf("The service reads it through the group dpsagent: run chgrp dpsagent %s", path)
}
