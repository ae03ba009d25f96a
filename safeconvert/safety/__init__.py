"""Untrusted models, hostile inputs and faults: nothing here may cost a user a wrong model or a hang.

trust               which files can run code when loaded; the --trust-model-code gate
torch_export_audit  static audit of .pt2 archives (torch.export.load can eval and unpickle)
saved_model_audit   SavedModel graphs with file-system or Python-callback operations in what loading runs
zip_members         zip archives whose member names readers resolve differently (repeated, case, NUL, ..)
tflite_structure    pure-Python walk of a .tflite flatbuffer before LiteRT sees it
probe, probe_child  load ONNX/TFLite files in a throwaway child first (native crashes stay there)
limits              absurd shapes and calibration sets are refused before anything is allocated
memory_limit        the run's memory limit (RLIMIT_DATA); running out of it is exit code 2
framework_imports   frameworks imported with Ctrl-C held (a signal inside a C extension's init can crash it)
signals             SIGTERM unwinds like Ctrl-C; cleanup finishes before a signal is acted on
disk, exit_codes    a full disk becomes exit code 2; interrupted runs record their real exit code
"""
