package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// errCrash is what the test hook returns to stop the store dead at a step,
// as a power cut would: the store does no clean-up after it.
var errCrash = errors.New("simulated crash")

// crashHook returns a Hook that fails the n-th step (1-based; 0: never) and
// records every step it sees.
func crashHook(n int, steps *[]string) func(string) error {
	return func(step string) error {
		*steps = append(*steps, step)
		if len(*steps) == n {
			return errCrash
		}
		return nil
	}
}

// TestCrashAtEveryStep interrupts each sequence at every step the store
// announces, re-opens the directory, and checks what a device needs after a
// power cut: the manifest is readable (nothing set aside), the identity it
// names is complete (the old one or the new one, decided by whether the
// manifest's rename happened), and no file is left that nothing names.
func TestCrashAtEveryStep(t *testing.T) {
	type state struct{ current, next string }
	tests := []struct {
		name  string
		setup []string // tags committed before the crash run: current, then staged next
		run   func(t *testing.T, s *Store) error
		// after[i] is the state once i manifest renames have happened.
		after []state
	}{
		{
			name: "first provisioning",
			run: func(t *testing.T, s *Store) error {
				id, err := writeIdentityErr(s, "A")
				if err != nil {
					return err
				}
				return s.Commit(&Manifest{Current: &id})
			},
			after: []state{{"", ""}, {"A", ""}},
		},
		{
			name:  "stage and promote",
			setup: []string{"A"},
			run: func(t *testing.T, s *Store) error {
				id, err := writeIdentityErr(s, "B")
				if err != nil {
					return err
				}
				if err := s.StageNext(id); err != nil {
					return err
				}
				return s.PromoteNext()
			},
			after: []state{{"A", ""}, {"A", "B"}, {"B", ""}},
		},
		{
			name:  "stage and discard",
			setup: []string{"A"},
			run: func(t *testing.T, s *Store) error {
				id, err := writeIdentityErr(s, "B")
				if err != nil {
					return err
				}
				if err := s.StageNext(id); err != nil {
					return err
				}
				return s.DiscardNext()
			},
			after: []state{{"A", ""}, {"A", "B"}, {"A", ""}},
		},
		{
			name:  "restage over a staged identity",
			setup: []string{"A", "B"},
			run: func(t *testing.T, s *Store) error {
				id, err := writeIdentityErr(s, "C")
				if err != nil {
					return err
				}
				return s.StageNext(id)
			},
			after: []state{{"A", "B"}, {"A", "C"}},
		},
		{
			name:  "reset",
			setup: []string{"A", "B"},
			run:   func(t *testing.T, s *Store) error { return s.Reset() },
			after: []state{{"A", "B"}, {"", ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A run without a crash lists the steps; the sequence of step kinds
			// is the same every run, only the random file names differ.
			var all []string
			runWithHook(t, tt.setup, tt.run, crashHook(0, &all))
			if len(all) == 0 {
				t.Fatal("the sequence announced no steps")
			}
			for n := 1; n <= len(all); n++ {
				t.Run(fmt.Sprintf("%02d-%s", n, stepKind(all[n-1])), func(t *testing.T) {
					var steps []string
					dir, err := runWithHook(t, tt.setup, tt.run, crashHook(n, &steps))
					if !errors.Is(err, errCrash) {
						t.Fatalf("the sequence returned %v, want the simulated crash at %s", err, all[n-1])
					}
					if got, want := stepKind(steps[n-1]), stepKind(all[n-1]); got != want {
						t.Fatalf("step %d is %s, but was %s in the listing run", n, got, want)
					}
					renames := 0
					for _, step := range steps[:n-1] { // the n-th step itself did not happen
						if step == "rename:"+manifestName {
							renames++
						}
					}
					want := tt.after[renames]

					// The restart may itself be cut short while removing garbage.
					var reopenSteps []string
					if s, err := Open(dir, Options{Hook: crashHook(1, &reopenSteps)}); err == nil {
						s.Close()
					} else if !errors.Is(err, errCrash) {
						t.Fatalf("first reopen after the crash: %v", err)
					}

					s := openStore(t, dir, testOptions(t))
					if r := s.Report(); r.Corrupt != nil || r.DroppedNext != nil {
						t.Fatalf("after a crash at %s the state was not usable: %+v", steps[n-1], r)
					}
					m, err := s.Load()
					if err != nil {
						t.Fatal(err)
					}
					if got := (state{tagOf(m.Current), tagOf(m.Next)}); got != want {
						t.Fatalf("after a crash at %s (%d commits done): current/next = %+v, want %+v",
							steps[n-1], renames, got, want)
					}
					for _, id := range []*Identity{m.Current, m.Next} {
						if id != nil {
							checkIdentityFiles(t, s, id)
						}
					}
					checkOnlyNamedFiles(t, s, m, !s.Report().Fresh)
				})
			}
		})
	}
}

// runWithHook prepares a directory holding the setup identities, then runs
// the sequence in a store with hook, closing it as a dying process would.
func runWithHook(t *testing.T, setup []string, run func(*testing.T, *Store) error, hook func(string) error) (string, error) {
	t.Helper()
	dir := stateDir(t)
	if len(setup) > 0 {
		s := openStore(t, dir, testOptions(t))
		cur := writeIdentity(t, s, setup[0])
		m := &Manifest{Current: &cur}
		if len(setup) > 1 {
			next := writeIdentity(t, s, setup[1])
			m.Next = &next
		}
		if err := s.Commit(m); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	opts := testOptions(t)
	opts.Hook = hook
	s := openStore(t, dir, opts)
	err := run(t, s)
	s.Close()
	return dir, err
}

// writeIdentityErr is writeIdentity for sequences that may be cut short.
func writeIdentityErr(s *Store, tag string) (Identity, error) {
	key, err := s.WriteBlob("key-*.blob", keyBytes(tag))
	if err != nil {
		return Identity{}, err
	}
	chain, err := s.WriteBlob("chain-*.pem", chainBytes(tag))
	if err != nil {
		return Identity{}, err
	}
	return testIdentity(tag, key, chain), nil
}

// stepKind drops the random part of a step's file name: "write:key-…:fsync"
// becomes "write:key:fsync".
func stepKind(step string) string {
	parts := strings.Split(step, ":")
	for i, p := range parts {
		if j := strings.IndexByte(p, '-'); j > 0 {
			parts[i] = p[:j]
		}
	}
	return strings.Join(parts, ":")
}

// TestCrashWhileSettingAside interrupts the setting aside of a corrupt
// manifest at every step: the next start must finish the job, and every
// byte must still be somewhere in the directory.
func TestCrashWhileSettingAside(t *testing.T) {
	prepare := func(t *testing.T) string {
		dir := stateDir(t)
		s := openStore(t, dir, testOptions(t))
		id := writeIdentity(t, s, "A")
		if err := s.Commit(&Manifest{Current: &id}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		writeRaw(t, dir, manifestName, []byte(`{"format_version": 1, "current": {"key_file": 7}}`))
		return dir
	}
	var all []string
	if s, err := Open(prepare(t), Options{Hook: crashHook(0, &all)}); err != nil {
		t.Fatal(err)
	} else {
		s.Close()
	}
	for n := 1; n <= len(all); n++ {
		t.Run(fmt.Sprintf("%02d-%s", n, stepKind(all[n-1])), func(t *testing.T) {
			dir := prepare(t)
			var steps []string
			if _, err := Open(dir, Options{Hook: crashHook(n, &steps)}); !errors.Is(err, errCrash) {
				t.Fatalf("Open: %v, want the simulated crash", err)
			}
			s := openStore(t, dir, testOptions(t))
			if _, err := s.Load(); !errors.Is(err, ErrCorrupt) && n < len(all) {
				t.Errorf("after a crash at %s, Load: %v, want ErrCorrupt", all[n-1], err)
			}
			if got := findAll(t, dir, keyBytes("A")); got != 1 {
				t.Errorf("the key's contents are in %d files, want 1 (in quarantine)", got)
			}
			if got := findAll(t, dir, chainBytes("A")); got != 1 {
				t.Errorf("the chain's contents are in %d files, want 1 (in quarantine)", got)
			}
		})
	}
}
