package layers

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestLinkFd links an unnamed file in both ways LinkFd knows: linkat of
// the fd itself, and of its /proc/self/fd link, which needs no
// CAP_DAC_READ_SEARCH.
func TestLinkFd(t *testing.T) {
	for _, proc := range []bool{false, true} {
		noEmptyPathLink = proc
		t.Cleanup(func() { noEmptyPathLink = false })
		dir := t.TempDir()
		dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := Tmpfile(dfd, unix.O_RDWR, 0o644)
		if err != nil {
			t.Skipf("no O_TMPFILE here: %v", err)
		}
		if _, err := Pwrite(fd, []byte("linked"), 0); err != nil {
			t.Fatal(err)
		}
		if err := LinkFd(fd, dfd, "f"); err != nil {
			t.Fatalf("LinkFd (through /proc: %v): %v", proc, err)
		}
		if err := LinkFd(fd, dfd, "f"); err != unix.EEXIST {
			t.Errorf("LinkFd over a name: %v, want EEXIST", err)
		}
		unix.Close(fd)
		unix.Close(dfd)
		if b, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(b) != "linked" {
			t.Errorf("the linked file reads %q, %v", b, err)
		}
	}
}

// TestRemoveAll removes a tree with a directory of mode 0 in it and a
// symlink to a directory outside, which stays.
func TestRemoveAll(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	tree := filepath.Join(base, "tree")
	testenv.MakeTree(t, outside, "f keep")
	testenv.MakeTree(t, tree, "d a/b", "d locked/c", "l a/link "+outside)
	testenv.Must(t, os.Chmod(filepath.Join(tree, "locked"), 0))
	dfd, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	if err := RemoveAll(dfd, "tree"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(tree); !os.IsNotExist(err) {
		t.Errorf("the tree is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
		t.Errorf("RemoveAll went through a symlink: %v", err)
	}
	if err := RemoveAll(dfd, "tree"); err != nil {
		t.Errorf("RemoveAll of nothing: %v", err)
	}
}

// upperCalls are the unix functions that change a filesystem: outside
// package layers, overlay and copyup may not call them, so that every
// change they make to the upper layer goes through upper.go.
var upperCalls = map[string]bool{
	"Mkdir": true, "Mkdirat": true, "Mknod": true, "Mknodat": true, "Symlink": true, "Symlinkat": true,
	"Link": true, "Linkat": true, "Unlink": true, "Unlinkat": true, "Rmdir": true,
	"Rename": true, "Renameat": true, "Renameat2": true,
	"Chmod": true, "Fchmod": true, "Fchmodat": true, "Chown": true, "Lchown": true, "Fchown": true, "Fchownat": true,
	"Utimes": true, "UtimesNano": true, "UtimesNanoAt": true, "Futimes": true, "Futimesat": true, "Utime": true,
	"Truncate": true, "Ftruncate": true, "Fallocate": true, "Pwrite": true, "Pwritev": true, "CopyFileRange": true,
	"Setxattr": true, "Lsetxattr": true, "Fsetxattr": true, "Removexattr": true, "Lremovexattr": true, "Fremovexattr": true,
	"IoctlSetInt": true, "IoctlSetPointerInt": true, "IoctlFileClone": true, "IoctlFileCloneRange": true,
	"Fsync": true, "Fdatasync": true, "Syncfs": true,
}

// writeFlags are open flags that make or change a file.
var writeFlags = []string{"O_CREAT", "O_TMPFILE", "O_TRUNC", "O_WRONLY", "O_RDWR", "O_APPEND"}

// sources parses the non-test Go files of each directory in dirs and
// calls f with each file's name (dir/file.go) and syntax tree.
func sources(t *testing.T, fset *token.FileSet, dirs []string, f func(name string, file *ast.File)) {
	t.Helper()
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: %v", dir, err)
		}
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			file, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			f(filepath.Join(filepath.Base(dir), filepath.Base(path)), file)
		}
	}
}

// TestUpperChangesGoThroughLayers reads the sources of packages overlay,
// copyup and check (whose --repair writes the upper layer and workdir
// offline) and fails on any call that changes a filesystem other than
// through this package: a unix call of upperCalls, an open with a flag
// of writeFlags, or a raw syscall (but the FUSE connection's own ioctls
// and writes in overlay/serve.go and the splice pipe in overlay/read.go).
func TestUpperChangesGoThroughLayers(t *testing.T) {
	allowed := map[string]bool{"overlay/serve.go": true, "overlay/read.go": true}
	fset := token.NewFileSet()
	sources(t, fset, []string{"../overlay", "../copyup", "../check"}, func(name string, f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "unix" {
				return true
			}
			fn, pos := sel.Sel.Name, fset.Position(call.Pos())
			switch {
			case upperCalls[fn]:
				t.Errorf("%s:%d: unix.%s changes a filesystem outside package layers", name, pos.Line, fn)
			case strings.HasPrefix(fn, "Syscall") || fn == "Write":
				if !allowed[name] {
					t.Errorf("%s:%d: unix.%s outside package layers", name, pos.Line, fn)
				}
			case fn == "Open" || fn == "Openat" || fn == "Openat2":
				for _, a := range call.Args {
					if s := exprText(a); containsAny(s, writeFlags) {
						t.Errorf("%s:%d: unix.%s with %s outside package layers", name, pos.Line, fn, s)
					}
				}
			}
			return true
		})
	})
}

// exprText returns the selectors and names an expression is made of.
func exprText(e ast.Expr) string {
	var b strings.Builder
	ast.Inspect(e, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok {
			b.WriteString(id.Name + " ")
		}
		return true
	})
	return b.String()
}

func containsAny(s string, words []string) bool {
	for _, w := range strings.Fields(s) {
		for _, x := range words {
			if w == x {
				return true
			}
		}
	}
	return false
}

// maxFuncLines is the longest a function of the engine's packages may
// be: a longer one does several things, each of which wants a name.
const maxFuncLines = 80

// TestNoLongFunctions reads the sources of the engine's packages (not
// their tests) and fails on a function longer than maxFuncLines lines,
// from its func line to its closing brace.
func TestNoLongFunctions(t *testing.T) {
	fset := token.NewFileSet()
	sources(t, fset, []string{"../overlay", "../layers", "../copyup", "../inodes"}, func(name string, f *ast.File) {
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			first, last := fset.Position(fn.Pos()).Line, fset.Position(fn.End()).Line
			if n := last - first + 1; n > maxFuncLines {
				t.Errorf("%s:%d: %s is %d lines, more than %d", name, first, fn.Name.Name, n, maxFuncLines)
			}
		}
	})
}
