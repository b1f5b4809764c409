package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Names the store reserves for itself. Everything else at the top level of
// the directory is either named by the manifest or garbage.
const (
	manifestName     = "state.json"
	lockName         = "lock"
	tempPrefix       = ".tmp-"
	setAsidePrefix   = manifestName + "." // state.json.corrupt-<ts>, state.json.newer-<ts>
	quarantinePrefix = "quarantine-"
	maxBlobName      = 128
)

// checkBlobName accepts only plain names the store could have generated. A
// manifest is read from disk and its names are later removed, so a name like
// "../../etc/shadow" or "lock" must never get that far.
func checkBlobName(name string) error {
	if name == "" {
		return errors.New("empty file name")
	}
	if len(name) > maxBlobName {
		return fmt.Errorf("file name %.20q... is longer than %d bytes", name, maxBlobName)
	}
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.' && i > 0:
		default:
			return fmt.Errorf("file name %q: only letters, digits, '-', '_' and a '.' after the first character are allowed", name)
		}
	}
	if reserved(name) {
		return fmt.Errorf("file name %q is reserved for the store itself", name)
	}
	return nil
}

// reserved reports whether name belongs to the store's own bookkeeping and so
// is never a blob and never garbage.
func reserved(name string) bool {
	return name == manifestName || name == lockName ||
		strings.HasPrefix(name, setAsidePrefix) || strings.HasPrefix(name, quarantinePrefix)
}

// blobName fills the last "*" in pattern (or appends, as os.CreateTemp does)
// with 16 random hex digits. Random rather than content-addressed names keep
// two identities from ever sharing a file, even with identical contents.
func blobName(pattern string) (string, error) {
	if strings.Count(pattern, "*") > 1 {
		return "", fmt.Errorf("blob name pattern %q has more than one '*'", pattern)
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
	random := hex.EncodeToString(b[:])
	name := pattern + random
	if before, after, ok := strings.Cut(pattern, "*"); ok {
		name = before + random + after
	}
	if err := checkBlobName(name); err != nil {
		return "", fmt.Errorf("blob name pattern %q: %w", pattern, err)
	}
	return name, nil
}
