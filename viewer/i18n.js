// Vietnamese and English strings; the choice is kept in localStorage.
const STRINGS = {
  vi: {
    title: "Xem ảnh chẩn đoán", language: "English", logout: "Đăng xuất", login: "Đăng nhập",
    username: "Tên đăng nhập", password: "Mật khẩu", loginFailed: "Sai tên đăng nhập hoặc mật khẩu",
    patientId: "Mã bệnh nhân / CCCD / BHYT", patientName: "Họ tên", accession: "Số phiếu", dateFrom: "Từ ngày",
    dateTo: "Đến ngày", modality: "Loại máy", search: "Tìm", date: "Ngày", description: "Mô tả",
    images: "Ảnh", previous: "Trước", next: "Sau", noResults: "Không có ca chụp nào", back: "Danh sách",
    slice: "Lát", loading: "Đang tải", presets: "Cửa sổ", invert: "Đảo màu",
    help: "Phím tắt", fit: "Vừa khung", rotate: "Xoay", flipH: "Lật ngang", flipV: "Lật dọc", zoom: "Phóng to/thu nhỏ",
    "window/level": "Cửa sổ/mức", pan: "Di chuyển", flip: "Lật", length: "Đo chiều dài",
  },
  en: {
    title: "Diagnostic viewer", language: "Tiếng Việt", logout: "Log out", login: "Log in",
    username: "User name", password: "Password", loginFailed: "Unknown user or wrong password",
    patientId: "Patient ID / citizen ID / insurance", patientName: "Name", accession: "Accession", dateFrom: "From",
    dateTo: "To", modality: "Modality", search: "Search", date: "Date", description: "Description",
    images: "Images", previous: "Previous", next: "Next", noResults: "No studies", back: "Worklist",
    slice: "Slice", loading: "Loading", presets: "Window", invert: "Invert",
    help: "Shortcuts", fit: "Fit", rotate: "Rotate", flipH: "Flip H", flipV: "Flip V", zoom: "Zoom",
    "window/level": "Window/level", pan: "Pan", flip: "Flip", length: "Length",
  },
};

let language = localStorage.getItem("pacsgw.language") || "vi";

export function t(key) {
  return STRINGS[language][key] ?? key;
}

export function toggleLanguage() {
  language = language === "vi" ? "en" : "vi";
  localStorage.setItem("pacsgw.language", language);
  document.documentElement.lang = language;
}
