package main

import (
	"io"
	"os"
)

// isTerminal reports whether w is a character device such as a terminal; logs
// are coloured only there, so journald and files get plain text.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
