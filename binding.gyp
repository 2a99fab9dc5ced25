{
  "variables": {
    # 1 in development and CI only (scripts/build-native.js --werror, LOOPDEV_WERROR=1): a
    # user's newer compiler may warn about code that was clean here, and must still build it.
    "loopdev_werror%": 0
  },
  "targets": [
    {
      "target_name": "loopdev",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/op.cc",
        "native/layout.cc",
        "native/status.cc",
        "native/control.cc",
        "native/device.cc",
        "native/target.cc",
        "native/change.cc",
        "native/fs.cc",
        "native/list.cc",
        "native/mount.cc",
        "native/exit.cc",
        "native/reap.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
      "cflags": ["-Wall", "-Wextra"],
      "conditions": [
        ["loopdev_werror==1", { "cflags": ["-Werror"], "cflags_cc": ["-Werror"] }]
      ]
    }
  ]
}
