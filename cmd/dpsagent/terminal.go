package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// isTerminal asks the terminal driver whether f is a terminal. Logs are
// coloured and steps drawn live only there, and init asks questions only of
// one: a character device such as /dev/null, the stdin of image builds and
// services, is no one to talk to.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(file.Fd()), unix.TCGETS)
	return err == nil
}
