package store

import "fmt"

// A renewal stages the new identity as Next, tries it, then promotes or
// discards it. Each step is one manifest commit, so after a crash the agent
// finds either no next (retry the renewal), or a staged next (try it again),
// or the new identity already current; never a half-rotated key.

// StageNext commits id as the next identity beside the current one. Its files
// must already be written (WriteBlob). An identity already staged is replaced
// and its files removed.
func (s *Store) StageNext(id Identity) error {
	return s.Update(func(m *Manifest) error {
		if m.Current == nil {
			return fmt.Errorf("stage next identity: %w to renew (commit the first identity as Current instead)", ErrNoCurrent)
		}
		m.Next = &id
		return nil
	})
}

// PromoteNext makes the staged identity current. The previous current
// identity's files are removed only after that commit is durable, so a crash
// keeps one identity or the other, complete.
func (s *Store) PromoteNext() error {
	return s.Update(func(m *Manifest) error {
		if m.Next == nil {
			return fmt.Errorf("promote next identity: %w", ErrNoNext)
		}
		m.Current, m.Next = m.Next, nil
		return nil
	})
}

// DiscardNext drops the staged identity and then removes its files; the
// current identity stays. With nothing staged it does nothing.
func (s *Store) DiscardNext() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if s.m.Next == nil {
		return nil
	}
	m := s.m.Clone()
	m.Next = nil
	return s.commit(m)
}

// Reset forgets everything the manifest held (identities, ID scope,
// registration facts) and removes every file it named, as well as any blob
// not yet committed. Set-aside manifests and quarantined files are kept: they
// are the operator's, not the agent's.
func (s *Store) Reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if err := s.commit(&Manifest{}); err != nil {
		return fmt.Errorf("reset state: %w", err)
	}
	if _, err := s.collectGarbage(); err != nil {
		return fmt.Errorf("reset state: %w", err)
	}
	return nil
}
