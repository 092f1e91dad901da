// Vietnamese and English strings; the choice is kept in localStorage.
const STRINGS = {
  vi: {
    title: "Xem ảnh chẩn đoán", language: "English", logout: "Đăng xuất", close: "Đóng", login: "Đăng nhập",
    username: "Tên đăng nhập", password: "Mật khẩu", loginFailed: "Sai tên đăng nhập hoặc mật khẩu",
    ssoLogin: "Đăng nhập bằng tài khoản bệnh viện", ssoFailed: "Đăng nhập một lần không thành công",
    ssoRefused: "Tài khoản bệnh viện chưa được cấp quyền xem ảnh", ssoUnavailable: "Không kết nối được máy chủ xác thực",
    sessionEnded: "Phiên làm việc đã hết, vui lòng đăng nhập lại", failed: "Có lỗi xảy ra",
    shareEnded: "Liên kết chia sẻ đã hết hạn hoặc đã bị thu hồi",
    patientId: "Mã BN / CCCD / BHYT", patientIdShort: "Mã BN", patientName: "Họ tên", birthDate: "Ngày sinh",
    accession: "Số phiếu", dateFrom: "Từ ngày", dateTo: "Đến ngày", modality: "Loại máy", status: "Trạng thái",
    all: "Tất cả", unread: "Chưa đọc", inProgress: "Đang đọc", read: "Đã đọc", search: "Tìm", date: "Ngày chụp",
    description: "Mô tả", images: "Ảnh", previous: "Trước", next: "Sau", noResults: "Không có ca chụp nào",
    back: "Danh sách", auditTrail: "Nhật ký truy cập", time: "Thời gian", user: "Người dùng", action: "Thao tác",
    target: "Đối tượng", outcome: "Kết quả", admin: "quản trị", radiologist: "bác sĩ CĐHA", referring: "bác sĩ chỉ định",
    auditor: "kiểm tra", share: "Chia sẻ",
    slice: "Lát", loading: "Đang tải", loadFailed: "Không tải được", prior: "CA CŨ", series: "Loạt", image: "Ảnh",
    location: "Vị trí", thickness: "Độ dày", zoom: "Phóng to/thu nhỏ", roiWaiting: "đang tải điểm ảnh…",
    loadingSlice: "Đang tải…", lossyPreview: "Ảnh xem trước, nén mất dữ liệu", preview: "xem trước", auto: "tự động",
    help: "Phím tắt", fit: "Vừa khung", rotate: "Xoay", flipH: "Lật ngang", flipV: "Lật dọc", invert: "Đảo màu",
    clearMeasurements: "Xoá số đo", cine: "Cine", presets: "Cửa sổ", brain: "Não", lung: "Phổi", bone: "Xương",
    abdomen: "Bụng", mediastinum: "Trung thất", default: "Mặc định", priors: "Ca chụp trước",
    "window/level": "Cửa sổ/mức", scroll: "Cuộn lát", pan: "Di chuyển", length: "Đo chiều dài", angle: "Đo góc",
    roi: "Vùng đo (trung bình ± độ lệch)", flip: "Lật", firstLast: "Lát đầu / cuối", scrollTool: "Công cụ cuộn lát",
    overlayToggle: "Ẩn/hiện thông tin", pinch: "Chụm/mở hai ngón: phóng to, kéo hai ngón: di chuyển",
    nextViewport: "Khung kế tiếp", "1:1": "Kích thước thật",
    report: "Kết quả đọc", noReport: "Chưa có kết quả", draft: "Bản nháp", final: "Đã duyệt", findings: "Mô tả",
    impression: "Kết luận", template: "Mẫu kết quả…", saveDraft: "Lưu nháp", finalize: "Duyệt kết quả",
    confirmFinal: "Xác nhận duyệt (không sửa được nữa)",
    day1: "1 ngày", day3: "3 ngày", day7: "7 ngày", day30: "30 ngày", validFor: "Hiệu lực", shareLabel: "Ghi chú",
    shareLabelHint: "vd: cho bệnh nhân", createLink: "Tạo liên kết", links: "Các liên kết", expires: "hết hạn",
    revoke: "Thu hồi", revoked: "đã thu hồi", expired: "đã hết hạn", qr: "Mã QR của liên kết", copy: "Chép",
  },
  en: {
    title: "Diagnostic viewer", language: "Tiếng Việt", logout: "Log out", close: "Close", login: "Log in",
    username: "User name", password: "Password", loginFailed: "Unknown user or wrong password",
    ssoLogin: "Sign in with the hospital account", ssoFailed: "Single sign-on did not succeed",
    ssoRefused: "The hospital account has no role in the viewer", ssoUnavailable: "The identity provider cannot be reached",
    sessionEnded: "Your session ended, please log in again", failed: "Something went wrong",
    shareEnded: "This share link has expired or was revoked",
    patientId: "Patient ID / citizen ID / insurance", patientIdShort: "Patient ID", patientName: "Name", birthDate: "Born",
    accession: "Accession", dateFrom: "From", dateTo: "To", modality: "Modality", status: "Status",
    all: "All", unread: "Unread", inProgress: "In progress", read: "Read", search: "Search", date: "Date",
    description: "Description", images: "Images", previous: "Previous", next: "Next", noResults: "No studies",
    back: "Worklist", auditTrail: "Audit trail", time: "Time", user: "User", action: "Action", target: "Target",
    outcome: "Outcome", admin: "admin", radiologist: "radiologist", referring: "referring physician", auditor: "auditor",
    share: "Share",
    slice: "Slice", loading: "Loading", loadFailed: "Could not load", prior: "PRIOR", series: "Series", image: "Image",
    location: "Location", thickness: "Thickness", zoom: "Zoom", roiWaiting: "pixels loading…",
    loadingSlice: "Loading…", lossyPreview: "Lossy preview", preview: "preview", auto: "auto",
    help: "Shortcuts", fit: "Fit", rotate: "Rotate", flipH: "Flip H", flipV: "Flip V", invert: "Invert",
    clearMeasurements: "Clear", cine: "Cine", presets: "Window", brain: "Brain", lung: "Lung", bone: "Bone",
    abdomen: "Abdomen", mediastinum: "Mediastinum", default: "Default", priors: "Prior studies",
    "window/level": "Window/level", scroll: "Scroll", pan: "Pan", length: "Length", angle: "Angle",
    roi: "ROI (mean ± SD)", flip: "Flip", firstLast: "First / last slice", scrollTool: "Scroll tool",
    overlayToggle: "Hide/show overlay", pinch: "Pinch: zoom, two-finger drag: pan", nextViewport: "Next viewport",
    "1:1": "Actual size",
    report: "Report", noReport: "No report yet", draft: "Draft", final: "Final", findings: "Findings",
    impression: "Impression", template: "Template…", saveDraft: "Save draft", finalize: "Finalise",
    confirmFinal: "Confirm: finalise (no more edits)",
    day1: "1 day", day3: "3 days", day7: "7 days", day30: "30 days", validFor: "Valid for", shareLabel: "Note",
    shareLabelHint: "e.g. for the patient", createLink: "Create link", links: "Links", expires: "expires",
    revoke: "Revoke", revoked: "revoked", expired: "expired", qr: "QR code of the link", copy: "Copy",
  },
};

let current = localStorage.getItem("pacsgw.language") || "vi";
document.documentElement.lang = current;

export function t(key) {
  return STRINGS[current][key] ?? key;
}

export function language() {
  return current;
}

export function toggleLanguage() {
  current = current === "vi" ? "en" : "vi";
  localStorage.setItem("pacsgw.language", current);
  document.documentElement.lang = current;
}
