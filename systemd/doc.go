// Package systemd holds dpsagent's service unit (dpsagent.service) and the
// tests that check it with systemd's own tools; it has no code.
package systemd
