"""Untrusted models, hostile inputs and faults: nothing here may cost a user a wrong model or a hang.

trust             which files can run code when loaded; the --trust-model-code gate
torch_export_audit  static audit of .pt2 archives (torch.export.load can eval and unpickle)
tflite_structure  pure-Python walk of a .tflite flatbuffer before LiteRT sees it
probe             load ONNX/TFLite files in a throwaway child first (native crashes stay there)
limits            absurd shapes are refused before anything is allocated
signals           SIGTERM unwinds like Ctrl-C; cleanup finishes before a signal is acted on
disk              a full disk while writing becomes exit code 2 with the OS's words
"""
