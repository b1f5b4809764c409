//go:build !killpoints

package main

// Kill points exist only in binaries built with -tags killpoints, for the
// crash tests (killpoints_on.go). A shipped binary has no hooks at all.

func killPointStoreHook() func(step string) error { return nil }

func killPointTPMHook() func(name string) { return nil }
