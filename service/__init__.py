"""likeness service: similarity, search and index management over an exported ONNX model.

Never imports torch: it needs only the contract, onnxruntime, FAISS and FastAPI.
"""
