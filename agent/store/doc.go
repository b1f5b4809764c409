// Package store owns dpsagent's state directory: the manifest that names the
// device's identity (a key blob and its issued certificate chain), the files
// it names, and the rules that keep them consistent across crashes.
//
// # Layout
//
// The directory (default /var/lib/dpsagent) is 0700 and every file in it 0600:
//
//	state.json                      the manifest: the commit point (see Manifest)
//	lock                            flock'd by the one process that may write
//	key-<random>.blob, chain-<random>.pem, ...
//	                                files named by the manifest (any pattern the caller picks)
//	state.json.corrupt-<ts>         a manifest that could not be used, kept for the operator
//	state.json.newer-<ts>           a newer format's manifest set aside by `dpsagent reset`
//	quarantine-<ts>/                files that lay beside a corrupt manifest
//
// # Crash safety
//
// Every file is written to a temporary file in the directory, fsynced, renamed
// into place, and the directory fsynced. Blobs get fresh random names and are
// written before the manifest that names them; files a manifest stops naming
// are removed only after the new manifest is durable. So at any instant the
// manifest on disk names complete files: a crash leaves either the old or the
// new identity, never a mix. Files no manifest names are left-overs of an
// interrupted run and are removed when the directory is next opened.
//
// A manifest that cannot be used (bad JSON, wrong types, missing files) is
// never deleted: it is renamed to state.json.corrupt-<ts>, and every other
// file in the directory is moved into quarantine-<ts>/ before that rename,
// because without a manifest nothing says which of them still matter, and a
// quarantined key may be the only copy of a working identity. The agent then
// provisions a new identity and says why (see CorruptError).
//
// A manifest whose staged next identity is unusable while its current one is
// fine only loses the next identity: a failed renewal must not cost the
// working identity.
package store
