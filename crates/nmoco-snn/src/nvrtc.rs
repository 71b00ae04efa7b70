//! NVRTC, loaded dynamically with `libloading` (no CUDA toolkit or `cuda` feature needed to
//! build). Used by the CUDA path to compile the kernels at run time and by the compile test.
//!
//! The library is `$NMOCO_NVRTC_LIB` when set, otherwise the first of `libnvrtc.so.13`,
//! `libnvrtc.so.12`, `libnvrtc.so` the dynamic loader finds.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::OnceLock;

use crate::error::SnnError;

type Prog = *mut c_void;
type CreateFn = unsafe extern "C" fn(
    *mut Prog,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileFn = unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(Prog, *mut usize) -> c_int;
type GetFn = unsafe extern "C" fn(Prog, *mut c_char) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut Prog) -> c_int;
type ErrStrFn = unsafe extern "C" fn(c_int) -> *const c_char;
type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;

/// A loaded NVRTC library.
pub struct Nvrtc {
    path: String,
    create: CreateFn,
    compile: CompileFn,
    ptx_size: SizeFn,
    ptx: GetFn,
    log_size: SizeFn,
    log: GetFn,
    destroy: DestroyFn,
    err_str: ErrStrFn,
    version: VersionFn,
    // Keeps the function pointers above valid; never unloaded while `self` lives.
    _lib: libloading::Library,
    // NVRTC's builtins library, preloaded from NVRTC's own folder (see `open`).
    _builtins: Vec<libloading::Library>,
}

impl std::fmt::Debug for Nvrtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nvrtc({})", self.path)
    }
}

/// Environment variable naming the NVRTC library to load.
pub const NVRTC_LIB_ENV: &str = "NMOCO_NVRTC_LIB";

fn candidates() -> Vec<String> {
    match std::env::var(NVRTC_LIB_ENV) {
        Ok(p) if !p.is_empty() => vec![p],
        _ => ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

/// NVRTC opens `libnvrtc-builtins.so.<major>.<minor>` by name at compile time, which the dynamic
/// loader only finds on its search path. When NVRTC is given as a path (e.g. from a PyPI wheel),
/// load the builtins from the same folder first (globally), so that lookup finds them loaded.
fn preload_builtins(path: &str) -> Vec<libloading::Library> {
    let Some(dir) = std::path::Path::new(path).parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("libnvrtc-builtins.so") {
            #[cfg(unix)]
            {
                use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
                // SAFETY: NVRTC's builtins library has no initialisers with preconditions.
                if let Ok(l) = unsafe { Library::open(Some(e.path()), RTLD_NOW | RTLD_GLOBAL) } {
                    out.push(l.into());
                }
            }
        }
    }
    out
}

impl Nvrtc {
    /// Load NVRTC from `path`.
    pub fn open(path: &str) -> Result<Self, SnnError> {
        let err = |reason: String| SnnError::NvrtcLoad {
            path: path.to_string(),
            reason,
        };
        let builtins = preload_builtins(path);
        // SAFETY: loading NVRTC runs its (well-behaved) initialisers only.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| err(e.to_string()))?;
        macro_rules! sym {
            ($name:literal, $ty:ty) => {{
                // SAFETY: the symbol has this C signature in every NVRTC since CUDA 11.
                let s: libloading::Symbol<'_, $ty> =
                    unsafe { lib.get($name) }.map_err(|e| err(e.to_string()))?;
                *s
            }};
        }
        let create = sym!(b"nvrtcCreateProgram\0", CreateFn);
        let compile = sym!(b"nvrtcCompileProgram\0", CompileFn);
        let ptx_size = sym!(b"nvrtcGetPTXSize\0", SizeFn);
        let ptx = sym!(b"nvrtcGetPTX\0", GetFn);
        let log_size = sym!(b"nvrtcGetProgramLogSize\0", SizeFn);
        let log = sym!(b"nvrtcGetProgramLog\0", GetFn);
        let destroy = sym!(b"nvrtcDestroyProgram\0", DestroyFn);
        let err_str = sym!(b"nvrtcGetErrorString\0", ErrStrFn);
        let version = sym!(b"nvrtcVersion\0", VersionFn);
        Ok(Self {
            path: path.to_string(),
            create,
            compile,
            ptx_size,
            ptx,
            log_size,
            log,
            destroy,
            err_str,
            version,
            _lib: lib,
            _builtins: builtins,
        })
    }

    /// Load from `$NMOCO_NVRTC_LIB` or the default names; the error is the last failure.
    pub fn load() -> Result<Self, SnnError> {
        let mut last = None;
        for c in candidates() {
            match Self::open(&c) {
                Ok(n) => return Ok(n),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(SnnError::NvrtcLoad {
            path: String::new(),
            reason: "no candidate".into(),
        }))
    }

    /// The process-wide instance (loaded once).
    pub fn global() -> Result<&'static Nvrtc, SnnError> {
        static G: OnceLock<Result<Nvrtc, String>> = OnceLock::new();
        match G.get_or_init(|| Nvrtc::load().map_err(|e| e.to_string())) {
            Ok(n) => Ok(n),
            Err(reason) => Err(SnnError::NvrtcLoad {
                path: candidates().join(", "),
                reason: reason.clone(),
            }),
        }
    }

    /// The path it was loaded from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `(major, minor)` of the loaded NVRTC.
    pub fn version(&self) -> (i32, i32) {
        let (mut a, mut b) = (0, 0);
        // SAFETY: two valid out-pointers.
        unsafe { (self.version)(&mut a, &mut b) };
        (a, b)
    }

    fn code(&self, r: c_int) -> String {
        // SAFETY: NVRTC returns a static string for every result code.
        let p = unsafe { (self.err_str)(r) };
        if p.is_null() {
            return format!("nvrtc error {r}");
        }
        // SAFETY: non-null, NUL-terminated static string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Compile `src` (named `name`) with `options` to PTX. A compile error carries NVRTC's log.
    pub fn compile_ptx(
        &self,
        src: &str,
        name: &str,
        options: &[String],
    ) -> Result<String, SnnError> {
        let fail = |code: String, log: String| SnnError::NvrtcCompile {
            module: name.to_string(),
            code,
            log,
        };
        let nul = |_| fail("nul byte in input".into(), String::new());
        let c_src = CString::new(src).map_err(nul)?;
        let c_name = CString::new(name).map_err(nul)?;
        let c_opts = options
            .iter()
            .map(|o| CString::new(o.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(nul)?;
        let opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Prog = std::ptr::null_mut();
        // SAFETY: valid C strings; no headers.
        let r = unsafe {
            (self.create)(
                &mut prog,
                c_src.as_ptr(),
                c_name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(fail(self.code(r), String::new()));
        }
        let result = (|| {
            // SAFETY: prog is a live program; option pointers outlive the call.
            let r = unsafe { (self.compile)(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
            if r != 0 {
                return Err(fail(self.code(r), self.program_log(prog)));
            }
            let mut size = 0usize;
            // SAFETY: prog is live, out-pointer valid.
            let r = unsafe { (self.ptx_size)(prog, &mut size) };
            if r != 0 {
                return Err(fail(self.code(r), String::new()));
            }
            let mut buf = vec![0u8; size.max(1)];
            // SAFETY: buf holds `size` bytes as NVRTC requires.
            let r = unsafe { (self.ptx)(prog, buf.as_mut_ptr().cast()) };
            if r != 0 {
                return Err(fail(self.code(r), String::new()));
            }
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            buf.truncate(end);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        })();
        // SAFETY: prog was created above and is destroyed once.
        unsafe { (self.destroy)(&mut prog) };
        result
    }

    fn program_log(&self, prog: Prog) -> String {
        let mut size = 0usize;
        // SAFETY: prog is live, out-pointer valid.
        if unsafe { (self.log_size)(prog, &mut size) } != 0 || size == 0 {
            return String::new();
        }
        let mut buf = vec![0u8; size];
        // SAFETY: buf holds `size` bytes.
        if unsafe { (self.log)(prog, buf.as_mut_ptr().cast()) } != 0 {
            return String::new();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }
}
