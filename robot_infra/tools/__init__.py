"""Set-up tools for a real arm, each run as ``python -m robot_infra.tools.<tool>``:
find_workspace_bounds (the workspace box), pick_roi (a camera's crop), check_cameras (a frame
per camera, sizes and frame rates)."""
